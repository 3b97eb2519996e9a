package service

import "testing"

// Metrics and status queries are polls under both task API versions and the Sandbox API;
// anything that changes a task or pod is not, nor a name from another service.
func TestIsPoll(t *testing.T) {
	for _, m := range []string{
		"/containerd.task.v2.Task/Stats", "/containerd.task.v3.Task/Stats",
		"/containerd.task.v3.Task/State", "/containerd.task.v2.Task/Connect",
		"/containerd.runtime.sandbox.v1.Sandbox/SandboxMetrics",
		"/containerd.runtime.sandbox.v1.Sandbox/SandboxStatus",
		"/containerd.runtime.sandbox.v1.Sandbox/PingSandbox",
	} {
		if !IsPoll(m) {
			t.Errorf("IsPoll(%q) = false, want true", m)
		}
	}
	for _, m := range []string{
		"/containerd.task.v2.Task/Create", "/containerd.task.v3.Task/Start",
		"/containerd.task.v3.Task/Exec", "/containerd.task.v2.Task/Kill",
		"/containerd.task.v3.Task/Delete", "/containerd.task.v3.Task/Wait",
		"/containerd.runtime.sandbox.v1.Sandbox/StartSandbox",
		"/containerd.runtime.sandbox.v1.Sandbox/StopSandbox",
		"/example.introspect.v1.Introspect/Snapshot",
		"/other.Service/Stats", "Stats", "",
	} {
		if IsPoll(m) {
			t.Errorf("IsPoll(%q) = true, want false", m)
		}
	}
}
