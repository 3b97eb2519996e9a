package launch

import (
	"reflect"
	"testing"
)

func TestParseFlagsContainerdCommandLines(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want Flags
	}{
		{"1.6 start", []string{"-namespace", "ns", "-address", "/run/c.sock", "-publish-binary", "/usr/bin/containerd", "-id", "t1", "-debug", "start"},
			Flags{Namespace: "ns", Address: "/run/c.sock", PublishBinary: "/usr/bin/containerd", ID: "t1", Debug: true, Action: "start"}},
		{"2.x delete with bundle", []string{"-namespace", "ns", "-address", "/a", "-publish-binary", "/b", "-id", "u1", "-bundle", "/x/u1", "-debug", "delete"},
			Flags{Namespace: "ns", Address: "/a", PublishBinary: "/b", ID: "u1", Bundle: "/x/u1", Debug: true, Action: "delete"}},
		{"equals form and double dash", []string{"--namespace=ns", "-id=t2", "-debug=false", "start"},
			Flags{Namespace: "ns", ID: "t2", Action: "start"}},
		{"daemon has no action", []string{"-namespace", "ns", "-id", "t3", "-address", "/a", "-socket", "/run/s/x"},
			Flags{Namespace: "ns", ID: "t3", Address: "/a", Socket: "/run/s/x"}},
		{"daemon that may warm the cgroup lock", []string{"-namespace", "ns", "-id", "t3", "-socket", "/run/s/x", "-warm-cgroups"},
			Flags{Namespace: "ns", ID: "t3", Socket: "/run/s/x", WarmCgroups: true}},
		{"info", []string{"-info"}, Flags{Info: true}},
		{"version", []string{"-v"}, Flags{Version: true}},
		{"version, containerd 2.4's long form", []string{"--version"}, Flags{Version: true}},
		// Every spelling of a boolean that Go's flag package (the stock
		// shim's parser) takes.
		{"boolean spellings", []string{"-debug=T", "-warm-cgroups=False", "-info=TRUE", "start"}, Flags{Debug: true, Info: true, Action: "start"}},
		{"unknown valued flag is skipped with its value", []string{"-namespace", "ns", "-future-flag", "val", "-id", "t4", "start"},
			Flags{Namespace: "ns", ID: "t4", Action: "start", Ignored: []string{"future-flag"}}},
		{"unknown boolean flag before action", []string{"-id", "t5", "-future-bool", "start"},
			Flags{ID: "t5", Action: "start", Ignored: []string{"future-bool"}}},
		{"unknown boolean flag before flag", []string{"-future-bool", "-id", "t6", "delete"},
			Flags{ID: "t6", Action: "delete", Ignored: []string{"future-bool"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFlags(tc.args)
			if err != nil {
				t.Fatalf("ParseFlags: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseFlagsErrors(t *testing.T) {
	for _, args := range [][]string{{"-id"}, {"-debug=maybe", "start"}} {
		if _, err := ParseFlags(args); err == nil {
			t.Errorf("ParseFlags(%q) succeeded, want an error", args)
		}
	}
}
