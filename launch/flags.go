// Package launch is how containerd starts and cleans up this shim: the
// command line, the short-lived `start` and `delete` invocations, `-info`,
// and the bootstrap of the long-lived daemon that `start` spawns.
package launch

import (
	"fmt"
	"strconv"
	"strings"
)

// Version and Revision are set at build time (-ldflags -X).
var (
	Version  = "dev"
	Revision = "unknown"
)

// Flags is the shim's command line.
type Flags struct {
	Namespace     string
	Address       string // containerd's gRPC socket (bare path)
	PublishBinary string
	ID            string
	Bundle        string
	Debug         bool
	Version       bool
	Info          bool
	WarmCgroups   bool     // daemon: no ShimCgroup move is coming, warm the cgroup migration lock at once
	Socket        string   // daemon: path of the socket it serves (listener inherited on fd 3)
	Action        string   // "start", "delete", "introspect", or "" for the daemon
	Ignored       []string // unknown flags, kept for a log line
}

var valueFlags = map[string]func(*Flags, string){
	"namespace":      func(f *Flags, v string) { f.Namespace = v },
	"address":        func(f *Flags, v string) { f.Address = v },
	"publish-binary": func(f *Flags, v string) { f.PublishBinary = v },
	"id":             func(f *Flags, v string) { f.ID = v },
	"bundle":         func(f *Flags, v string) { f.Bundle = v },
	"socket":         func(f *Flags, v string) { f.Socket = v },
}

var boolFlags = map[string]func(*Flags, bool){
	"debug":        func(f *Flags, v bool) { f.Debug = v },
	"v":            func(f *Flags, v bool) { f.Version = v },
	"version":      func(f *Flags, v bool) { f.Version = v }, // containerd 2.4's library spells it both ways
	"info":         func(f *Flags, v bool) { f.Info = v },
	"warm-cgroups": func(f *Flags, v bool) { f.WarmCgroups = v },
}

// DaemonSocket is the socket a command line of this binary (without argv[0])
// serves, or "" if it is not a daemon's (start, delete, a pod's holder...),
// and the containerd it serves (its -address): how `upgrade --all` finds
// the live daemons.
func DaemonSocket(args []string) (socket, containerd string) {
	f, err := ParseFlags(args)
	if err != nil || f.Action != "" {
		return "", ""
	}
	return f.Socket, f.Address
}

// ParseFlags reads the command line containerd gives the shim. Flags come in
// any order with one or two dashes, as "-flag value" or "-flag=value"; the
// action word is the first argument that is not a flag. Unknown flags are
// ignored rather than fatal: newer containerd releases add flags, and a shim
// that refused them would break on upgrade.
func ParseFlags(args []string) (Flags, error) {
	var f Flags
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if i+1 < len(args) {
				f.Action = args[i+1]
			}
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			f.Action = a
			break // containerd puts the action last; anything after it is not ours
		}
		name := strings.TrimLeft(a, "-")
		value, hasValue := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = k, v, true
		}
		if set, ok := boolFlags[name]; ok {
			b := true
			if hasValue {
				// Every spelling Go's flag package takes, as the stock
				// shim's flag.BoolVar does.
				var err error
				if b, err = strconv.ParseBool(value); err != nil {
					return f, fmt.Errorf("flag -%s: %q is not a boolean", name, value)
				}
			}
			set(&f, b)
			continue
		}
		set, known := valueFlags[name]
		if !hasValue {
			// An unknown flag takes the next word as its value unless that
			// word is another flag or the last word (the action).
			takesNext := known || (i+1 < len(args)-1 && !strings.HasPrefix(args[i+1], "-"))
			if takesNext {
				if i+1 >= len(args) {
					return f, fmt.Errorf("flag -%s needs a value", name)
				}
				i++
				value = args[i]
			}
		}
		if known {
			set(&f, value)
		} else {
			f.Ignored = append(f.Ignored, name)
		}
	}
	return f, nil
}
