package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Options from containerd's config (issue 4, item 3): an operator writes runc options in the
// CRI runtime handler's options table, and pods of that handler run with them.
//
// containerd's CRI plugin hands such a table to a non-runc runtime as
// runtimeoptions.v1.Options. Under 1.6 only `ConfigPath` survives (a TOML file the shim
// reads); under 2.x the table's own keys arrive too, as config_body. Both forms are tested
// where the daemon supports them, with BinaryName naming a wrapper that logs each runtime
// call and execs runc, and NoNewKeyring set: the pause container and an app container must
// run (exit code, CRI log) and be created (with --no-new-keyring), started and deleted
// through the wrapper. A handler whose BinaryName
// does not exist must fail RunPodSandbox quickly with an error that names the binary, and
// leave nothing behind (StartCRIDaemon's cleanup checks that).
func TestCRIRuntimeOptionsFromConfig(t *testing.T) {
	for _, flavor := range harness.AllFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			dir := t.TempDir()
			wrapper, argvLog := loggingRuncWrapper(t, dir)
			const missing = "/nonexistent/runc-from-config"
			optionsFile := func(name, binary string) string {
				path := filepath.Join(dir, name+".toml")
				body := fmt.Sprintf("# runtime options of handler %s\nBinaryName = %q # the wrapper\nNoNewKeyring = true\n", name, binary)
				if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
				return fmt.Sprintf("ConfigPath = %q", path)
			}

			wrapped := []string{"wrapped-file"}
			failing := []string{"missing-file"}
			opts := []harness.DaemonOption{
				harness.WithCRIHandler(harness.CRIHandler{Name: "wrapped-file", Options: []string{optionsFile("wrapped-file", wrapper)}}),
				harness.WithCRIHandler(harness.CRIHandler{Name: "missing-file", Options: []string{optionsFile("missing-file", missing)}}),
			}
			if harness.FlavorMajor(flavor) == 2 {
				wrapped = append(wrapped, "wrapped-inline")
				failing = append(failing, "missing-inline")
				opts = append(opts,
					harness.WithCRIHandler(harness.CRIHandler{Name: "wrapped-inline", Options: []string{fmt.Sprintf("BinaryName = %q", wrapper), "NoNewKeyring = true"}}),
					harness.WithCRIHandler(harness.CRIHandler{Name: "missing-inline", Options: []string{fmt.Sprintf("BinaryName = %q", missing)}}),
				)
			}
			d, cri := harness.StartCRIDaemon(t, flavor, opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			for _, handler := range wrapped {
				t.Run(handler, func(t *testing.T) {
					pod, err := runCRIPodWithHandler(ctx, d, cri, "pod-"+harness.RandID(6), handler)
					if err != nil {
						t.Fatal(err)
					}
					const name = "app"
					id := runCRIAppToExit(t, ctx, cri, pod, name, "echo via-config; exit 5", 5, []string{"stdout via-config"})
					if _, err := cri.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.id}); err != nil {
						t.Fatalf("StopPodSandbox: %v", err)
					}
					if _, err := cri.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.id}); err != nil {
						t.Fatalf("RemovePodSandbox: %v", err)
					}
					data, _ := os.ReadFile(argvLog)
					for _, line := range strings.Split(string(data), "\n") {
						if f := strings.Fields(line); slices.Contains(f, "create") && len(f) > 0 && f[len(f)-1] == id && !slices.Contains(f, "--no-new-keyring") {
							t.Errorf("runtime create of %s without --no-new-keyring (NoNewKeyring = true in handler %s): %s", id, handler, line)
						}
					}
					for _, c := range []struct{ what, id string }{{"pause", pod.id}, {name, id}} {
						for _, verb := range []string{"create", "start", "delete"} {
							if !hasRuntimeCall(string(data), verb, c.id) {
								t.Errorf("no `%s ... %s` call of the %s container in the wrapper's log: handler %s's BinaryName not used for it. Log:\n%s",
									verb, c.id, c.what, handler, data)
							}
						}
					}
				})
			}

			for _, handler := range failing {
				t.Run(handler, func(t *testing.T) {
					start := time.Now()
					pod, err := runCRIPodWithHandler(ctx, d, cri, "pod-"+harness.RandID(6), handler)
					took := time.Since(start)
					if err == nil {
						t.Fatalf("RunPodSandbox with BinaryName %s succeeded (pod %s)", missing, pod.id)
					}
					if !strings.Contains(err.Error(), missing) {
						t.Errorf("RunPodSandbox error does not name the missing binary %s: %v", missing, err)
					}
					if took > 10*time.Second {
						t.Errorf("RunPodSandbox took %v to fail", took)
					}
					t.Logf("RunPodSandbox failed after %v: %v", took.Round(time.Millisecond), err)
				})
			}
		})
	}
}
