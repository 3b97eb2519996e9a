// Package harness runs the shim under test inside real, private containerd daemons.
//
// Layout of the integration module (a Go module of its own; it never imports the shim's
// module, it only runs the built binary):
//
//	integration/
//	  harness/   this package: test image, daemons, ctr/Go-client helpers, leak checks
//	  *_test.go  the scenarios; each runs once per containerd flavor ("1.6", "2.x")
//
// Test image (image.go): ImageArchive builds an OCI image archive (oci-layout, index.json,
// manifest, config, one gzip layer) from Debian's static busybox: /bin/busybox, a symlink
// for every applet of `busybox --list-full`, /etc/passwd and /etc/group (root, nobody,
// www-data 33, backup 34, ...) and /tmp (1777). It is deterministic and cached in the temp
// dir under a name derived from busybox's checksum. ImportImage imports it as ImageName and
// unpacks it for the default snapshotter.
//
// Daemons (daemon.go): StartDaemon(t, flavor) / NewDaemon(flavor) start containerd 1.6
// (/usr/bin) or 2.x (/opt/containerd2/bin, or $CONTAINERD2_DIR) with everything private
// under /run/ex-test/<rand>/: root/, state/, c.sock (+ .ttrpc), config.toml,
// containerd.log, fifo/ and bin/. bin/ holds a copy of the shim under test ($SHIM_BINARY,
// default ../bin/containerd-shim-example-v2) as containerd-shim-example-v2 and is first on
// the daemon's PATH, followed by the flavor's own directory (so io.containerd.runc.v2
// resolves to the flavor's stock shim). CRI (and NRI in 2.x) are disabled. Stop (run by
// t.Cleanup for StartDaemon) deletes remaining tasks and containers, stops the daemon by
// PID (SIGTERM, then SIGKILL), kills shims it left (processes whose -address is its
// socket), force-deletes runc containers of its namespaces, unmounts everything under its
// directory deepest first and removes it.
//
// The runtime under test is $TEST_RUNTIME (default io.example.v2); set
// TEST_RUNTIME=io.containerd.runc.v2 to check the tests themselves against the stock shim.
//
// Clients (ctr.go, namespace.go): d.Ctr runs the flavor's ctr against the daemon in the
// namespace carried by the context; d.Client is a containerd 2.x Go client (it speaks to
// both flavors). d.NewNamespace(t) gives each test a unique namespace with the image
// imported, and on cleanup removes its tasks and containers and fails the test if anything
// of the namespace leaked; on failure it also prints what the daemon logged meanwhile.
//
// Leak checks (leaks.go): ShimProcesses, MountsUnder, RuncStateDir, ShimSocketPath,
// BundleDir, and Leftovers/WaitNoLeftovers, which combine them for one task or namespace.
package harness
