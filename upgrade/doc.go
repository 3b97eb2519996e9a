// Package upgrade replaces a running shim daemon's binary without touching
// its containers (issue 14, docs/upgrade.md): the daemon checks the new
// binary, pauses its connections, reaping, stdio relays and events at safe
// points, describes what it holds (handover), and executes the new binary in
// its own process, which takes everything over and serves on. The operator
// side is the `upgrade` command (command.go).
package upgrade
