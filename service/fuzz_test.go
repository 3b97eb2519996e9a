package service

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	runcopts "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/example/containerd-shim-example-v2/internal/identifier"
)

// Any options payload, of any type URL, decodes or fails with
// InvalidArgument; it never panics, and a runtime root is never relative.
func FuzzDecodeOptions(f *testing.F) {
	runc, _ := proto.Marshal(&runcopts.Options{BinaryName: "crun", Root: "/r"})
	for _, typ := range []string{typeExampleOptions, typeRuncOptions, typeLegacyCreate, typeCRIOptions, "unknown"} {
		f.Add(typ, runc)
		f.Add(typ, []byte{0xff, 0x01})
	}
	f.Add(typeCRIOptions, []byte("\x1a\x14BinaryName = \"crun\"\n"))
	f.Fuzz(func(t *testing.T, typeURL string, value []byte) {
		o, err := DecodeOptions(&anypb.Any{TypeUrl: typeURL, Value: value})
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
			return
		}
		if o.Root != "" && !strings.HasPrefix(o.Root, "/") {
			t.Fatalf("relative root %q accepted", o.Root)
		}
	})
}

// Request validation: an id that passes can never escape its directory.
func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"t1", "", "..", "a/b", "a..b", "x.y-z_1", strings.Repeat("a", 80)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if err := validateID("id", id); err == nil {
			if strings.ContainsAny(id, "/\x00") || id == "." || id == ".." || len(id) > identifier.MaxLen {
				t.Fatalf("dangerous id %q accepted", id)
			}
		} else if !errdefs.IsInvalidArgument(err) {
			t.Fatalf("error %v is not InvalidArgument", err)
		}
	})
}

func FuzzValidateBundle(f *testing.F) {
	f.Add("/run/containerd/io.containerd.runtime.v2.task/ns/c1")
	f.Add("/run/../etc/ns/c1")
	f.Add("relative/ns/c1")
	f.Add("/")
	// A bundle that is there, so that the accepted branch runs as well.
	real := f.TempDir()
	if err := os.WriteFile(filepath.Join(real, "config.json"), []byte("{}"), 0o600); err != nil {
		f.Fatal(err)
	}
	f.Add(real)
	if err := validateBundle(real); err != nil {
		f.Fatalf("a bundle with its config.json refused: %v", err)
	}
	f.Fuzz(func(t *testing.T, bundle string) {
		err := validateBundle(bundle)
		if err == nil {
			if !filepath.IsAbs(bundle) || filepath.Clean(bundle) != bundle {
				t.Fatalf("bundle %q accepted", bundle)
			}
			if _, serr := os.Stat(filepath.Join(bundle, "config.json")); serr != nil {
				t.Fatalf("bundle %q accepted without config.json: %v", bundle, serr)
			}
		} else if !errdefs.IsInvalidArgument(err) && !errdefs.IsNotFound(err) {
			t.Fatalf("bundle %q: error %v is neither InvalidArgument nor NotFound", bundle, err)
		}
	})
}

func FuzzParseOptionsTOML(f *testing.F) {
	f.Add("BinaryName = \"crun\"\nSystemdCgroup = true\n")
	f.Add("root = '/x' # c\n[table]\nIoUid = 7")
	f.Add("= = =")
	f.Fuzz(func(t *testing.T, body string) {
		if _, err := parseOptionsTOML([]byte(body)); err != nil && !errdefs.IsInvalidArgument(err) {
			t.Fatalf("error %v is not InvalidArgument", err)
		}
	})
}
