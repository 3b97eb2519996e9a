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

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/handover"
	"github.com/example/containerd-shim-example-v2/internal/proctree"
	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/oomlog"
	"github.com/example/containerd-shim-example-v2/process"
	"github.com/example/containerd-shim-example-v2/service"
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
	got := strings.Join(layoutOf(t, reflect.TypeOf(state{})), "\n") + "\n"
	file := filepath.Join("testdata", fmt.Sprintf("state-layout-v%d.txt", handover.StateVersion))
	if *updateLayout {
		// Only a version without a record gets one: rewriting an existing
		// version's record would silence this test without the version
		// being raised.
		if old, err := os.ReadFile(file); err == nil && string(old) != got {
			t.Fatalf("layout %d is recorded (%s) and differs: raise handover.StateVersion first", handover.StateVersion, file)
		}
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

// A layout this binary still claims to read (MinStateVersion on) decodes
// into the current types only if each of its paths is still there with the
// same kind: a renamed or retyped field would be dropped without an error.
// Layout 1 has no record (its builds grew it under one number); the later
// ones are checked.
func TestOlderLayoutsStillDecode(t *testing.T) {
	current := layoutOf(t, reflect.TypeOf(state{}))
	checked := 0
	for v := handover.MinStateVersion; v < handover.StateVersion; v++ {
		data, err := os.ReadFile(filepath.Join("testdata", fmt.Sprintf("state-layout-v%d.txt", v)))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, path := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if !slices.Contains(current, path) {
				t.Errorf("layout %d's %q is not in layout %d, which claims to read it: keep the field, or raise MinStateVersion", v, path, handover.StateVersion)
			}
		}
	}
	if checked == 0 && handover.StateVersion > 2 {
		t.Errorf("no older layout record found between %d and %d", handover.MinStateVersion, handover.StateVersion-1)
	}
}

type layoutInner struct {
	Added int `json:"added"`
}

type layoutSample struct {
	layoutInner
	Count int               `json:"count,string"`
	Sum   [2]byte           `json:"sum"`
	Blob  []byte            `json:"blob"`
	Byid  map[int]string    `json:"byid"`
	At    time.Time         `json:"at"`
	Skip  int               `json:"-"`
	Next  *layoutSample     `json:"next,omitempty"`
	Tags  map[string][]bool `json:"tags"`
}

// The layout names what encoding/json writes: promoted fields of an embedded
// struct at the parent's level, a ",string" field as a string, an array by
// its length, a map by its key kind.
func TestLayoutOfFollowsEncodingJSON(t *testing.T) {
	got := layoutOf(t, reflect.TypeOf(layoutSample{}))
	want := []string{
		".added int",
		".at time.Time",
		".blob bytes (base64)",
		".byid{int} string",
		".count (as string) int",
		".next (recursive upgrade.layoutSample)",
		".sum[2] uint8",
		".tags{string}[] bool",
	}
	if !slices.Equal(got, want) {
		t.Errorf("layout:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

var (
	timeType      = reflect.TypeOf(time.Time{})
	rawType       = reflect.TypeOf(json.RawMessage{})
	marshalerType = reflect.TypeOf((*json.Marshaler)(nil)).Elem()
	textType      = reflect.TypeOf((*encoding.TextMarshaler)(nil)).Elem()
)

// layoutOf lists every JSON path of t with its kind, sorted: a field's
// name as encoded, "[]" for a slice's elements, "[N]" for an array's, "{K}"
// for a map's values with its key kind. Embedded structs are flattened as
// encoding/json does; a field encoded as a string (",string") says so. An
// interface field fails: its layout cannot be known from the type.
func layoutOf(t *testing.T, typ reflect.Type) []string {
	return layoutWalk(t, typ, nil)
}

// layoutWalk is layoutOf; when omits is not nil it also records, for each
// field's path (as the lines spell it, without a kind), whether encoding/json
// leaves the field out when it is empty (omitempty).
func layoutWalk(t *testing.T, typ reflect.Type, omits map[string]bool) []string {
	var out []string
	var walk, fields func(prefix string, typ reflect.Type, seen map[reflect.Type]bool)
	fields = func(prefix string, typ reflect.Type, seen map[reflect.Type]bool) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" && opts == "" {
				continue
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
				fields(prefix, ft, seen) // promoted, exported or not
				continue
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if omits != nil {
				omits[prefix+"."+name] = slices.Contains(strings.Split(opts, ","), "omitempty")
			}
			if slices.Contains(strings.Split(opts, ","), "string") {
				name += " (as string)"
			}
			walk(prefix+"."+name, f.Type, seen)
		}
	}
	walk = func(prefix string, typ reflect.Type, seen map[reflect.Type]bool) {
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		switch {
		case typ == timeType || typ == rawType, typ.Implements(marshalerType), reflect.PointerTo(typ).Implements(marshalerType),
			typ.Implements(textType), reflect.PointerTo(typ).Implements(textType):
			out = append(out, prefix+" "+typ.String())
			return
		}
		switch typ.Kind() {
		case reflect.Struct:
			if seen[typ] {
				out = append(out, prefix+" (recursive "+typ.String()+")")
				return
			}
			seen[typ] = true
			defer delete(seen, typ)
			fields(prefix, typ, seen)
		case reflect.Slice:
			if typ.Elem().Kind() == reflect.Uint8 {
				out = append(out, prefix+" bytes (base64)")
				return
			}
			walk(prefix+"[]", typ.Elem(), seen)
		case reflect.Array:
			walk(fmt.Sprintf("%s[%d]", prefix, typ.Len()), typ.Elem(), seen)
		case reflect.Map:
			walk(prefix+"{"+typ.Key().Kind().String()+"}", typ.Elem(), seen)
		case reflect.Interface:
			t.Errorf("%s is an interface (%s): the handed-over state's layout must be known from its types", prefix, typ)
		default:
			out = append(out, prefix+" "+typ.Kind().String())
		}
	}
	walk("", typ, map[reflect.Type]bool{})
	slices.Sort(out)
	return out
}

// A daemon writes its state as handover.OldestWrittenVersion when it holds
// nothing newer (layoutNeeded), for the build before to take over. That
// holds only if every field added since that layout is left out when unused:
// each added path must lie below a field that is new and omitempty. A field
// added without it is always written, and the state never again has the
// older layout: raise OldestWrittenVersion with it.
func TestFieldsSinceTheOldestWrittenLayoutAreOmittedWhenUnused(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", fmt.Sprintf("state-layout-v%d.txt", handover.OldestWrittenVersion)))
	if err != nil {
		t.Fatalf("no record of layout %d, the oldest written: %v", handover.OldestWrittenVersion, err)
	}
	old := strings.Split(strings.TrimSpace(string(data)), "\n")
	omits := map[string]bool{}
	added := 0
	for _, line := range layoutWalk(t, reflect.TypeOf(state{}), omits) {
		if slices.Contains(old, line) {
			continue
		}
		added++
		path, _, _ := strings.Cut(line, " ")
		ok := false
		for i := 1; i <= len(path) && !ok; i++ {
			if i < len(path) && path[i] != '.' && path[i] != '[' && path[i] != '{' {
				continue
			}
			field := path[:i]
			newField := !slices.ContainsFunc(old, func(l string) bool {
				return l == field || strings.HasPrefix(l, field+" ") || strings.HasPrefix(l, field+".") ||
					strings.HasPrefix(l, field+"[") || strings.HasPrefix(l, field+"{")
			})
			ok = omits[field] && newField
		}
		if !ok {
			t.Errorf("%q is new since layout %d and is written even when unused: make it omitempty (and a rule in layoutNeeded), or raise handover.OldestWrittenVersion", line, handover.OldestWrittenVersion)
		}
	}
	if handover.OldestWrittenVersion < handover.StateVersion && added == 0 {
		t.Errorf("layout %d adds nothing to %d: OldestWrittenVersion could be %d", handover.StateVersion, handover.OldestWrittenVersion, handover.StateVersion)
	}
}

// A state is written in the newest layout both binaries read that can carry
// it: as an older layout for an older build while it holds nothing newer, and
// refused for that build, naming the newest thing it cannot take, once it
// holds one: a created task or a terminal writing to a log (layout 8), an
// output to a plain file (layout 9). Layout 10's exited-session records and
// layout 11's logger group and layout 12's memory events and OOM marks are
// dropped for an older build, not refused (layoutNeeded says why).
func TestStateWrittenInTheNewestLayoutBothRead(t *testing.T) {
	fifo := []shimio.OutputState{{Stream: "stdout"}}
	running := func(id string, pipes *shimio.PipesState) process.ContainerState {
		return process.ContainerState{ID: id, Init: process.ProcessState{ID: id, Status: process.Running, Pipes: pipes}}
	}
	fifos := state{Service: service.State{Containers: []process.ContainerState{
		running("c1", &shimio.PipesState{Outputs: fifo}),
	}}}
	created := state{Service: service.State{Containers: []process.ContainerState{
		running("c1", &shimio.PipesState{Outputs: fifo}),
		{ID: "c2", Init: process.ProcessState{ID: "c2", Status: process.Created, Pipes: &shimio.PipesState{Outputs: fifo}}},
	}}}
	ttyLog := state{Service: service.State{Containers: []process.ContainerState{
		running("c3", &shimio.PipesState{Terminal: &shimio.TerminalState{Log: &shimio.TerminalLogState{File: 5}}}),
	}}}
	plain := state{Service: service.State{Containers: []process.ContainerState{{
		ID:   "c4",
		Init: process.ProcessState{ID: "c4", Status: process.Created, Pipes: &shimio.PipesState{Outputs: fifo}},
		Execs: []process.ProcessState{{ID: "e1", Status: process.Running, Pipes: &shimio.PipesState{Outputs: []shimio.OutputState{
			{Stream: "stdout"}, {Stream: "stderr", Plain: true}}}}},
	}}}}
	sessions := state{Service: service.State{Containers: []process.ContainerState{{
		ID: "c5", Init: process.ProcessState{ID: "c5", Status: process.Running, Pipes: &shimio.PipesState{Outputs: fifo}},
		ExitedSessions: []proctree.Exited{{Session: 42, Members: []proctree.Proc{{Pid: 43, Start: 44}}}},
	}}}}
	loggerGroup := state{Service: service.State{Containers: []process.ContainerState{
		running("c6", &shimio.PipesState{LoggerEnds: &shimio.LoggerEndsState{Held: []int{5, 6}, OnExit: true, Group: 77}}),
	}}}
	events := state{Service: service.State{Containers: []process.ContainerState{{
		ID: "c7", Init: process.ProcessState{ID: "c7", Status: process.Stopped},
		OOMEvents: map[string]uint64{"max": 1, "oom_kill": 1}, OOMLimitHits: 1, OOMLimitMetAgo: time.Millisecond,
		OOMParent: &process.OOMParentCount{Kills: 4}, OOMLogMark: new(uint64),
	}}}}
	reads := func(lo, hi int) handover.Hello {
		return handover.Hello{Build: handover.Build{Version: "next"}, MinStateVersion: lo, StateVersion: hi}
	}
	for _, c := range []struct {
		name    string
		st      *state
		next    handover.Hello
		want    int    // the envelope's layout; 0: refused
		refusal string // in the refusal's text
	}{
		{"same build, memory events and OOM marks", &events, reads(1, 12), 12, ""},
		{"layout 11, memory events and OOM marks", &events, reads(1, 11), 11, ""},
		{"same build, logger group", &loggerGroup, reads(1, 12), 12, ""},
		{"layout 10, logger group", &loggerGroup, reads(1, 10), 10, ""},
		{"same build, exited sessions", &sessions, reads(1, 12), 12, ""},
		{"same build, plain file", &plain, reads(1, 12), 12, ""},
		{"same build, FIFOs", &fifos, reads(1, 12), 12, ""},
		{"layout 10, FIFOs", &fifos, reads(1, 10), 10, ""},
		{"layout 9, exited sessions", &sessions, reads(1, 9), 9, ""},
		{"layout 9, plain file", &plain, reads(1, 9), 9, ""},
		{"layout 8, FIFOs", &fifos, reads(1, 8), 8, ""},
		{"layout 8, created task", &created, reads(1, 8), 8, ""},
		{"layout 8, plain file", &plain, reads(1, 8), 0, "the state needs layout 9 (c4 exec e1's stderr goes to a plain file)"},
		{"layout 7, FIFOs", &fifos, reads(1, 7), 7, ""},
		{"layout 7, created task", &created, reads(1, 7), 0, "the state needs layout 8 (c2 is created and not started)"},
		{"layout 7, terminal to a log", &ttyLog, reads(1, 7), 0, "the state needs layout 8 (c3's terminal writes to a log or a logger)"},
		{"layout 6", &fifos, reads(1, 6), 0, "reads state layouts 1 to 6"},
		{"a newer build", &fifos, reads(10, 16), 14, ""},
		{"a build that reads only newer layouts", &fifos, reads(15, 16), 0, "reads state layouts 15 to 16"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fds := &handover.FDs{}
			defer fds.Release()
			fd, err := writeState(c.st, handover.Build{Version: "this"}, c.next, fds)
			if c.want == 0 {
				if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), c.refusal) {
					t.Fatalf("writeState: %v, want FailedPrecondition saying %q", err, c.refusal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", fd))
			if err != nil {
				t.Fatal(err)
			}
			var env handover.Envelope
			if err := json.Unmarshal(data, &env); err != nil {
				t.Fatal(err)
			}
			if env.StateVersion != c.want {
				t.Fatalf("written as layout %d, want %d", env.StateVersion, c.want)
			}
		})
	}
}

// The kernel's OOM log (layout 12) goes to a build that reads layout 12,
// and not to an older one, which would drop the field and keep its
// descriptor open in every child it starts: that duplicate is closed.
func TestTheKernelLogGoesOnlyToABuildThatKnowsIt(t *testing.T) {
	for _, c := range []struct {
		reads  int
		handed bool
	}{{12, true}, {11, false}} {
		t.Run(fmt.Sprintf("layout %d", c.reads), func(t *testing.T) {
			fds := &handover.FDs{}
			defer fds.Release()
			null, err := os.Open(os.DevNull) // in the log's place
			if err != nil {
				t.Fatal(err)
			}
			defer null.Close()
			fd, err := fds.KeepDup(null)
			if err != nil {
				t.Fatal(err)
			}
			st := state{Service: service.State{OOMLog: &oomlog.State{FD: fd, Seq: 7}}}
			hello := handover.Hello{Build: handover.Build{Version: "next"}, MinStateVersion: 1, StateVersion: c.reads}
			if _, err := writeState(&st, handover.Build{Version: "this"}, hello, fds); err != nil {
				t.Fatal(err)
			}
			if handed := st.Service.OOMLog != nil; handed != c.handed {
				t.Errorf("the log handed over %v, want %v", handed, c.handed)
			}
			// Kept for the execve: the state's memfd, and the log's if handed.
			if kept, want := fds.Len(), map[bool]int{true: 2, false: 1}[c.handed]; kept != want {
				t.Errorf("%d descriptors kept for the execve, want %d", kept, want)
			}
		})
	}
}

// A FIFO whose output waits for its client's next reader (layout 14) goes to
// a build that reads layout 14; an older one would drop the field and keep
// the two descriptors open: they are closed, and the output is not refused.
func TestALingeringFIFOGoesOnlyToABuildThatKnowsIt(t *testing.T) {
	for _, c := range []struct {
		reads  int
		handed bool
	}{{14, true}, {13, false}} {
		t.Run(fmt.Sprintf("layout %d", c.reads), func(t *testing.T) {
			fds := &handover.FDs{}
			defer fds.Release()
			null, err := os.Open(os.DevNull) // in the FIFO's place
			if err != nil {
				t.Fatal(err)
			}
			defer null.Close()
			var l shimio.LingeringState
			if l.FIFO, err = fds.KeepDup(null); err == nil {
				l.Handle, err = fds.KeepDup(null)
			}
			if err != nil {
				t.Fatal(err)
			}
			exec := process.ProcessState{ID: "e1", Status: process.Stopped, Pipes: &shimio.PipesState{Lingering: []shimio.LingeringState{l}}}
			st := state{Service: service.State{Containers: []process.ContainerState{{
				ID: "c1", Init: process.ProcessState{ID: "c1", Status: process.Running}, Execs: []process.ProcessState{exec},
			}}}}
			hello := handover.Hello{Build: handover.Build{Version: "next"}, MinStateVersion: 1, StateVersion: c.reads}
			if _, err := writeState(&st, handover.Build{Version: "this"}, hello, fds); err != nil {
				t.Fatal(err)
			}
			if handed := len(st.Service.Containers[0].Execs[0].Pipes.Lingering) > 0; handed != c.handed {
				t.Errorf("the lingering FIFO handed over %v, want %v", handed, c.handed)
			}
			// Kept for the execve: the state's memfd, and the FIFO's two if handed.
			if kept, want := fds.Len(), map[bool]int{true: 3, false: 1}[c.handed]; kept != want {
				t.Errorf("%d descriptors kept for the execve, want %d", kept, want)
			}
		})
	}
}
