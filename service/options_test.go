package service

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	runcopts "github.com/containerd/containerd/api/types/runc/options"
	criopts "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	exampleopts "github.com/example/containerd-shim-example-v2/proto/options/v1/pb"
)

func anyOf(t *testing.T, url string, m proto.Message) *anypb.Any {
	t.Helper()
	v, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return &anypb.Any{TypeUrl: url, Value: v}
}

// runcWithCriuPath encodes m with criu_path (field 8) as containerd 1.6 and
// 1.7 send it: the 2.x API the test links has no such field.
func runcWithCriuPath(t *testing.T, m *runcopts.Options, path string) *anypb.Any {
	a := anyOf(t, "containerd.runc.v1.Options", m)
	a.Value = protowire.AppendString(protowire.AppendTag(a.Value, 8, protowire.BytesType), path)
	return a
}

func TestDecodeOptionsAcceptedTypes(t *testing.T) {
	cases := []struct {
		name string
		in   *anypb.Any
		want RuntimeOptions
	}{
		{"none", nil, RuntimeOptions{}},
		{"ours", anyOf(t, "example.options.v1.Options", &exampleopts.Options{BinaryName: "crun", Root: "/run/x", SystemdCgroup: true}),
			RuntimeOptions{BinaryName: "crun", Root: "/run/x", SystemdCgroup: true}},
		{"runc", anyOf(t, "containerd.runc.v1.Options", &runcopts.Options{BinaryName: "crun", NoPivotRoot: true, IoUid: 7, ShimCgroup: "/shims"}),
			RuntimeOptions{BinaryName: "crun", NoPivotRoot: true, IoUID: 7, ShimCgroup: "/shims"}},
		{"runc with googleapis prefix", anyOf(t, "type.googleapis.com/containerd.runc.v1.Options", &runcopts.Options{Root: "/r"}),
			RuntimeOptions{Root: "/r"}},
		{"legacy 1.6 client", anyOf(t, "containerd.linux.runc.CreateOptions", &exampleopts.LegacyCreateOptions{NoPivotRoot: true, NoNewKeyring: true, IoGid: 9}),
			RuntimeOptions{NoPivotRoot: true, NoNewKeyring: true, IoGID: 9}},
		{"CRI body", anyOf(t, "runtimeoptions.v1.Options", &criopts.Options{ConfigBody: []byte("BinaryName = \"crun\"\nSystemdCgroup = true # comment\n# x\nShimCgroup = \"\"\n")}),
			RuntimeOptions{BinaryName: "crun", SystemdCgroup: true}},
		{"runc from containerd 1.6/1.7, criu_path", runcWithCriuPath(t, &runcopts.Options{Root: "/r"}, "/opt/criu/sbin/criu"),
			RuntimeOptions{Root: "/r", CriuPath: "/opt/criu/sbin/criu"}},
		{"CRI body, criu path", anyOf(t, "runtimeoptions.v1.Options", &criopts.Options{ConfigBody: []byte("CriuPath = '/opt/criu'\n")}),
			RuntimeOptions{CriuPath: "/opt/criu"}},
		{"unknown type ignored", &anypb.Any{TypeUrl: "some.other.Options", Value: []byte{1, 2, 3}}, RuntimeOptions{}},
		{"ours, stall timeout", anyOf(t, "example.options.v1.Options", &exampleopts.Options{StallTimeout: "90s"}),
			RuntimeOptions{StallTimeout: 90 * time.Second}},
		{"ours, stall timeout never", anyOf(t, "example.options.v1.Options", &exampleopts.Options{StallTimeout: "0"}),
			RuntimeOptions{StallTimeout: -1}},
		{"CRI body, stall timeout", anyOf(t, "runtimeoptions.v1.Options", &criopts.Options{ConfigBody: []byte("StallTimeout = \"2m\"\n")}),
			RuntimeOptions{StallTimeout: 2 * time.Minute}},
		{"CRI body, stall timeout never", anyOf(t, "runtimeoptions.v1.Options", &criopts.Options{ConfigBody: []byte("stall_timeout = '0s'\n")}),
			RuntimeOptions{StallTimeout: -1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeOptions(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDecodeOptionsCRIConfigPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "opts.toml")
	os.WriteFile(path, []byte("binary_name = 'crun'\nroot = \"/run/crun-root\"\n"), 0o600)
	got, err := DecodeOptions(anyOf(t, "runtimeoptions.v1.Options", &criopts.Options{ConfigPath: path}))
	if err != nil || got.BinaryName != "crun" || got.Root != "/run/crun-root" {
		t.Fatalf("%+v %v", got, err)
	}
}

func TestDecodeOptionsErrors(t *testing.T) {
	for name, a := range map[string]*anypb.Any{
		"garbage runc options":       {TypeUrl: "containerd.runc.v1.Options", Value: []byte{0xff, 0xff}},
		"relative root":              anyOf(t, "containerd.runc.v1.Options", &runcopts.Options{Root: "rel"}),
		"relative shim cgroup":       anyOf(t, "containerd.runc.v1.Options", &runcopts.Options{ShimCgroup: "shims"}),
		"shim cgroup with ..":        anyOf(t, "containerd.runc.v1.Options", &runcopts.Options{ShimCgroup: "/a/../../etc"}),
		"bad TOML":                   anyOf(t, "runtimeoptions.v1.Options", &criopts.Options{ConfigBody: []byte("BinaryName crun")}),
		"bad bool":                   anyOf(t, "runtimeoptions.v1.Options", &criopts.Options{ConfigBody: []byte("SystemdCgroup = maybe")}),
		"missing config file":        anyOf(t, "runtimeoptions.v1.Options", &criopts.Options{ConfigPath: "/nonexistent/opts.toml"}),
		"stall timeout, no unit":     anyOf(t, "example.options.v1.Options", &exampleopts.Options{StallTimeout: "30"}),
		"negative stall timeout":     anyOf(t, "example.options.v1.Options", &exampleopts.Options{StallTimeout: "-1s"}),
		"stall timeout, TOML number": anyOf(t, "runtimeoptions.v1.Options", &criopts.Options{ConfigBody: []byte("StallTimeout = 30")}),
	} {
		if _, err := DecodeOptions(a); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

// A shim cgroup whose directory names hold two dots is a cgroup like any
// other (the stock shim joins it); only a ".." element climbs out.
func TestDecodeOptionsShimCgroupWithDotsInAName(t *testing.T) {
	for _, cg := range []string{"/ex-shims..dots", "/pods/a..b/shims", "/a/..b"} {
		got, err := DecodeOptions(anyOf(t, "containerd.runc.v1.Options", &runcopts.Options{ShimCgroup: cg}))
		if err != nil || got.ShimCgroup != cg {
			t.Errorf("shim cgroup %q: %+v, %v", cg, got, err)
		}
	}
	for _, cg := range []string{"/a/..", "/../b", "/a/../b"} {
		if _, err := DecodeOptions(anyOf(t, "containerd.runc.v1.Options", &runcopts.Options{ShimCgroup: cg})); !errdefs.IsInvalidArgument(err) {
			t.Errorf("shim cgroup %q: %v, want InvalidArgument", cg, err)
		}
	}
}

func TestValidateIDAndBundle(t *testing.T) {
	for _, id := range []string{"", "a/b", "..", "a..b", "-a", "a b", string(make([]byte, 77))} {
		if err := validateID("id", id); !errdefs.IsInvalidArgument(err) {
			t.Errorf("id %q accepted", id)
		}
	}
	for _, id := range []string{"a", "t1", "a.b-c_d", "A9"} {
		if err := validateID("id", id); err != nil {
			t.Errorf("id %q refused: %v", id, err)
		}
	}
	// Any clean absolute directory with a config.json is a bundle, wherever
	// it is (containerd's state dir, a test harness's temp dir, ...).
	good := t.TempDir()
	if err := os.WriteFile(filepath.Join(good, "config.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := validateBundle(good); err != nil {
		t.Errorf("good bundle refused: %v", err)
	}
	noSpec := t.TempDir()
	if err := os.Mkdir(filepath.Join(noSpec, "config.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	for b, want := range map[string]func(error) bool{
		"":                                  errdefs.IsInvalidArgument,
		"relative/ns/c1":                    errdefs.IsInvalidArgument,
		good + "/../" + filepath.Base(good): errdefs.IsInvalidArgument,
		good + "/":                          errdefs.IsInvalidArgument,
		filepath.Join(good, "config.json"):  errdefs.IsInvalidArgument, // a file, not a directory
		noSpec:                              errdefs.IsInvalidArgument, // config.json is a directory
		filepath.Join(good, "missing"):      errdefs.IsNotFound,
		t.TempDir():                         errdefs.IsNotFound, // no config.json
	} {
		if err := validateBundle(b); !want(err) {
			t.Errorf("bundle %q: %v", b, err)
		}
	}
}

// Comments may follow any value, and a '#' inside a quoted string is part of it.
func TestParseOptionsTOMLComments(t *testing.T) {
	body := "BinaryName = \"/opt/run#c/runc\" # the wrapper\n" +
		"Root = '/run/r#1' # literal string\n" +
		"CriuWorkPath = \"/w\\\"#x\"\n" +
		"NoNewKeyring = true# no space before it\n"
	got, err := parseOptionsTOML([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	want := RuntimeOptions{BinaryName: "/opt/run#c/runc", Root: "/run/r#1", CriuWorkPath: "/w\"#x", NoNewKeyring: true}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if _, err := parseOptionsTOML([]byte("BinaryName = \"unterminated # x\n")); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("unterminated string: %v, want InvalidArgument", err)
	}
}

// The options table as containerd 2.x writes it (go-toml: keys sorted, so a
// long array can come before BinaryName, and sub-tables after the keys):
// every key of the table is read, and none of a sub-table's. What this
// reader would otherwise take differently from TOML is refused.
func TestParseOptionsTOMLAsContainerdWritesIt(t *testing.T) {
	body := "Annotations = ['" + strings.Repeat("a", 70000) + "']\n" +
		"BinaryName = '/usr/bin/crun'\n" +
		"SystemdCgroup = true\n\n" +
		"[Hooks]\nRoot = '/var/lib/hooks'\nIoUid = 7\n"
	got, err := parseOptionsTOML([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if want := (RuntimeOptions{BinaryName: "/usr/bin/crun", SystemdCgroup: true}); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	// Keys this shim does not read may be whatever TOML allows, repeated
	// after normalization included; a table under a header is not read.
	got, err = parseOptionsTOML([]byte("Foo_Bar = 1\nFooBar = 2\nfoobar = [\n  [1, 2],\n]\nRoot = '/r'\n[options]\nBinaryName = 'crun'\n"))
	if err != nil || got != (RuntimeOptions{Root: "/r"}) {
		t.Errorf("other keys and a sub-table: %+v, %v; want only Root", got, err)
	}
	for _, bad := range []string{
		"SystemdCgroup = T",             // ParseBool's, not TOML's
		"SystemdCgroup = 1",             //
		"BinaryName = 'cr' 'un'",        // two strings
		`BinaryName = "\x41"`,           // a Go escape, not a TOML one
		"Root = '/a'\nroot = '/b'",      // a key given twice
		"= 0",                           // no key
		"BinaryName = \"\"\"crun\"\"\"", // a multi-line string
	} {
		if _, err := parseOptionsTOML([]byte(bad)); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: %v, want InvalidArgument", bad, err)
		}
	}
}

// A config_path naming a FIFO is refused at once: opening it would wait for
// a writer, holding the shim's start and Create.
func TestOptionsFileMustBeARegularFile(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "options.toml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := readOptionsFile(fifo); done <- err }()
	select {
	case err := <-done:
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("a FIFO as the options file: %v, want InvalidArgument", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reading a FIFO as the options file waits for a writer")
	}
}

// A restore asked for through the task options (the Go client's
// WithRestoreImagePath) reaches the runtime even where containerd passes the
// path only to runc-named runtimes (1.6, 1.7).
func TestRestorePathFallsBackToOptions(t *testing.T) {
	opts := RuntimeOptions{CriuImagePath: "/var/lib/cp"}
	if got := restorePath("", opts); got != "/var/lib/cp" {
		t.Errorf("no request path: %q, want the option's", got)
	}
	if got := restorePath("/run/containerd/cp1", opts); got != "/run/containerd/cp1" {
		t.Errorf("request path: %q, want the request's", got)
	}
	if got := restorePath("", RuntimeOptions{}); got != "" {
		t.Errorf("neither: %q, want a fresh start", got)
	}
}
