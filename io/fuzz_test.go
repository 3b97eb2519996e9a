package io

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// Log URIs from the client: parsed or refused with InvalidArgument, never a
// relative path or a size cap that could not hold one record.
func FuzzParseFileURI(f *testing.F) {
	for _, s := range []string{"file:///var/log/c.log?format=cri&max-size=10MiB&max-files=3", "file://rel", "file:///x?max-size=1",
		"file:///x?format=json", "file:///%zz", "file:///x?max-files=-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		o, err := ParseFileURI(uri)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
			return
		}
		if !strings.HasPrefix(o.Path, "/") || (o.MaxSize > 0 && o.MaxSize < 2*MaxCRILine) || o.MaxFiles < 0 {
			t.Fatalf("accepted %+v from %q", o, uri)
		}
	})
}
