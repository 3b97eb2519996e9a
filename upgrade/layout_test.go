package upgrade

import (
	"encoding"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/example/containerd-shim-example-v2/handover"
)

var updateLayout = flag.Bool("update-layout", false, "rewrite testdata/state-layout-v<N>.txt from the current state type")

// The state handed over has the layout its version says. An older binary
// decodes a newer state without complaint, dropping what it does not know
// (a terminal, a log, a logger), and a binary that passed the hello check
// has already been executed: so every change to the layout raises
// handover.StateVersion, which the hello check compares before execve.
// This test holds the layout of each version: a change to the state types
// fails it until StateVersion is raised and the new layout recorded
// (`go test ./upgrade -run TestStateLayout -update-layout`).
func TestStateLayoutMatchesItsVersion(t *testing.T) {
	got := strings.Join(layoutOf(reflect.TypeOf(state{})), "\n") + "\n"
	file := filepath.Join("testdata", fmt.Sprintf("state-layout-v%d.txt", handover.StateVersion))
	if *updateLayout {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("no recorded layout for state version %d (%v): raise handover.StateVersion only with its layout recorded", handover.StateVersion, err)
	}
	if got != string(want) {
		t.Errorf("the handed-over state's layout differs from version %d's (%s): raise handover.StateVersion and record the new layout", handover.StateVersion, file)
	}
	if handover.MinStateVersion > handover.StateVersion || handover.MinStateVersion < 1 {
		t.Errorf("MinStateVersion %d outside 1..%d", handover.MinStateVersion, handover.StateVersion)
	}
}

var (
	timeType      = reflect.TypeOf(time.Time{})
	rawType       = reflect.TypeOf(json.RawMessage{})
	marshalerType = reflect.TypeOf((*json.Marshaler)(nil)).Elem()
	textType      = reflect.TypeOf((*encoding.TextMarshaler)(nil)).Elem()
)

// layoutOf lists every JSON path of t with its kind, sorted: a field's
// name as encoded, "[]" for a slice's or an array's elements, "{}" for a
// map's values.
func layoutOf(t reflect.Type) []string {
	var out []string
	var walk func(prefix string, t reflect.Type, seen map[reflect.Type]bool)
	walk = func(prefix string, t reflect.Type, seen map[reflect.Type]bool) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch {
		case t == timeType || t == rawType, t.Implements(marshalerType), reflect.PointerTo(t).Implements(marshalerType),
			t.Implements(textType), reflect.PointerTo(t).Implements(textType):
			out = append(out, prefix+" "+t.String())
			return
		}
		switch t.Kind() {
		case reflect.Struct:
			if seen[t] {
				out = append(out, prefix+" (recursive "+t.String()+")")
				return
			}
			seen[t] = true
			defer delete(seen, t)
			for i := 0; i < t.NumField(); i++ {
				f := t.Field(i)
				if !f.IsExported() {
					continue
				}
				name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				if name == "-" {
					continue
				}
				if name == "" {
					name = f.Name
				}
				walk(prefix+"."+name, f.Type, seen)
			}
		case reflect.Slice, reflect.Array:
			if t.Elem().Kind() == reflect.Uint8 {
				out = append(out, prefix+" bytes")
				return
			}
			walk(prefix+"[]", t.Elem(), seen)
		case reflect.Map:
			walk(prefix+"{}", t.Elem(), seen)
		default:
			out = append(out, prefix+" "+t.Kind().String())
		}
	}
	walk("", t, map[reflect.Type]bool{})
	slices.Sort(out)
	return out
}
