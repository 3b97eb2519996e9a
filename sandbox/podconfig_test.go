package sandbox

import (
	"os"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// The encoder below writes CRI's field numbers independently of the decoder's
// constants, from api.proto.

func bytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func varintField(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func encodePodConfig() []byte {
	var meta []byte
	meta = bytesField(meta, 1, []byte("web"))
	meta = bytesField(meta, 2, []byte("uid-1"))
	meta = bytesField(meta, 3, []byte("default"))
	meta = varintField(meta, 4, 2) // attempt: skipped

	var dns []byte
	dns = bytesField(dns, 1, []byte("192.0.2.53"))
	dns = bytesField(dns, 1, []byte("192.0.2.54"))
	dns = bytesField(dns, 2, []byte("example.test"))
	dns = bytesField(dns, 3, []byte("ndots:2"))

	var userns []byte
	userns = varintField(userns, 1, 2) // NODE

	var nsopts []byte
	nsopts = varintField(nsopts, 1, 0) // network POD
	nsopts = varintField(nsopts, 2, 0) // pid POD
	nsopts = varintField(nsopts, 3, 2) // ipc NODE
	nsopts = bytesField(nsopts, 5, userns)

	var sec []byte
	sec = bytesField(sec, 1, nsopts)
	sec = varintField(sec, 6, 1) // privileged: skipped

	entry := func(k, v string) []byte {
		var e []byte
		e = bytesField(e, 1, []byte(k))
		return bytesField(e, 2, []byte(v))
	}
	var linux []byte
	linux = bytesField(linux, 1, []byte("/kubepods/pod1"))
	linux = bytesField(linux, 2, sec)
	linux = bytesField(linux, 3, entry("net.ipv4.ip_unprivileged_port_start", "80"))
	linux = bytesField(linux, 3, entry("kernel.shm_rmid_forced", "1"))

	var c []byte
	c = bytesField(c, 1, meta)
	c = bytesField(c, 2, []byte("web-0"))
	c = bytesField(c, 3, []byte("/var/log/pods/x"))
	c = bytesField(c, 4, dns)
	c = bytesField(c, 6, entry("app", "web")) // labels: skipped
	c = bytesField(c, 8, linux)
	c = protowire.AppendTag(c, 99, protowire.Fixed32Type) // unknown field
	c = protowire.AppendFixed32(c, 7)
	return c
}

func TestParsePodConfig(t *testing.T) {
	got, err := ParsePodConfig("type.googleapis.com/runtime.v1.PodSandboxConfig", encodePodConfig())
	if err != nil {
		t.Fatal(err)
	}
	want := PodConfig{
		Name: "web", UID: "uid-1", Namespace: "default",
		Hostname:     "web-0",
		DNS:          DNSConfig{Servers: []string{"192.0.2.53", "192.0.2.54"}, Searches: []string{"example.test"}, Options: []string{"ndots:2"}},
		HasDNS:       true,
		CgroupParent: "/kubepods/pod1",
		Sysctls:      map[string]string{"net.ipv4.ip_unprivileged_port_start": "80", "kernel.shm_rmid_forced": "1"},
		Network:      ModePod, PID: ModePod, IPC: ModeNode,
		UsernsMode: ModeNode, HasUserns: true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParsePodConfig:\n got %+v\nwant %+v", got, want)
	}
}

func TestParsePodConfigDefaultsAndErrors(t *testing.T) {
	c, err := ParsePodConfig("", nil)
	if err != nil || c.Network != ModeNode {
		t.Errorf("no options: %+v %v, want the node's network", c, err)
	}
	// An empty PodSandboxConfig: every namespace mode is POD (proto3 zero).
	c, err = ParsePodConfig("runtime.v1.PodSandboxConfig", nil)
	if err != nil || c.Network != ModePod || c.HasDNS {
		t.Errorf("empty config: %+v %v", c, err)
	}
	if _, err := ParsePodConfig("containerd.runc.v1.Options", []byte{}); err == nil {
		t.Errorf("options of another type were accepted")
	}
	if _, err := ParsePodConfig("runtime.v1.PodSandboxConfig", []byte{0x0a, 0x05, 0x01}); err == nil {
		t.Errorf("a truncated message was accepted")
	}
}

func TestResolvConf(t *testing.T) {
	b, err := resolvConf(PodConfig{HasDNS: true, DNS: DNSConfig{Servers: []string{"192.0.2.53"}, Searches: []string{"a.test", "b.test"}, Options: []string{"ndots:5", "edns0"}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "search a.test b.test\nnameserver 192.0.2.53\noptions ndots:5 edns0\n"; string(b) != want {
		t.Errorf("resolv.conf %q, want %q", b, want)
	}
	// An empty DNSConfig is an empty file, as CRI writes it for a pause
	// container (it used to be taken for none here); none is the node's
	// file.
	b, err = resolvConf(PodConfig{HasDNS: true})
	if err != nil || len(b) != 0 {
		t.Errorf("an empty DNSConfig gives %q %v, want an empty file", b, err)
	}
	node, nerr := os.ReadFile(nodeResolv)
	b, err = resolvConf(PodConfig{})
	if nerr == nil && (err != nil || string(b) != string(node)) {
		t.Errorf("no DNSConfig gives %q %v, want the node's %s (%q)", b, err, nodeResolv, node)
	}
}

// A field number past protobuf's largest is malformed, as protobuf-go says.
func TestParsePodConfigRefusesFieldNumbersTooLarge(t *testing.T) {
	if _, err := ParsePodConfig("runtime.v1.PodSandboxConfig", []byte{0x80, 0x80, 0x80, 0x80, 0x10, 0x00}); err == nil {
		t.Error("a field numbered 2^29 was accepted")
	}
}
