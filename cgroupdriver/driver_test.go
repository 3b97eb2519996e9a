package cgroupdriver

import "testing"

func TestIsSystemdPath(t *testing.T) {
	for p, want := range map[string]bool{
		"kubepods-burstable-pod1.slice:cri-containerd:abc": true,  // CRI, kubelet's systemd driver
		"system.slice:docker:abc":                          true,  // dockerd's systemd driver
		":cri-containerd:abc":                              true,  // the default slice
		"system.slice::abc":                                true,  // no prefix
		"/kubepods/burstable/pod1/abc":                     false, // cgroupfs
		"kubepods/pod1":                                    false,
		"":                                                 false,
		"system.slice:docker":                              false, // two fields
		"system.slice:docker:":                             false, // no name
		"system.slice:docker:a:b":                          false, // four fields
		"system:docker:abc":                                false, // not a slice
		".slice:docker:abc":                                false,
		"/system.slice:docker:abc":                         false, // a path
		"system.slice:docker:a/b":                          false,
	} {
		if got := IsSystemdPath(p); got != want {
			t.Errorf("IsSystemdPath(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestWantsSystemdOnlyWhereSystemdRuns(t *testing.T) {
	booted := SystemdBooted
	t.Cleanup(func() { SystemdBooted = booted })
	const p = "system.slice:docker:abc"
	SystemdBooted = func() bool { return false }
	if WantsSystemd(p) {
		t.Errorf("WantsSystemd(%q) without systemd = true, want false (the driver could only fail)", p)
	}
	SystemdBooted = func() bool { return true }
	if !WantsSystemd(p) {
		t.Errorf("WantsSystemd(%q) with systemd = false, want true", p)
	}
	if WantsSystemd("/docker/abc") {
		t.Error("WantsSystemd of a cgroupfs path = true, want false")
	}
}
