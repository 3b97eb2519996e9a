package main

import (
	"fmt"
	"syscall"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// lifecycle: NewTask -> Wait -> Start -> exit -> Delete of `true`, timed
// from NewTask to the end of Delete (container metadata is set up outside).
// Its teardown row is the part from the exit (Wait returned) to the end of
// Delete, which includes the shim's Shutdown and containerd's `shim delete`.
func (b *bench) lifecycle() error {
	s := b.newSample("lifecycle", "lifecycle: create+start+wait+delete `true` (Go client)", "ms", true)
	td := b.newSample("lifecycle-teardown", "lifecycle teardown: exit seen (Wait returned) → Delete returned", "ms", true)
	return b.both(b.cfg.iterations, func(rt string) error {
		c, err := b.container(rt, b.id("lc"), []string{"true"})
		if err != nil {
			return err
		}
		defer b.remove(c)
		t0 := time.Now()
		task, err := c.NewTask(b.ctx, cio.NullIO)
		if err != nil {
			return err
		}
		t1, err := b.runOnce(task)
		if err != nil {
			return err
		}
		s.add(rt, ms(time.Since(t0)))
		td.add(rt, ms(time.Since(t1)))
		return nil
	})
}

func (b *bench) ctrRun() error {
	s := b.newSample("ctr-run", "`ctr run --rm … true`", "ms", true)
	return b.both(b.cfg.iterations, func(rt string) error {
		t0 := time.Now()
		args := []string{"run", "--rm", "--runtime", rt}
		if b.lane.binary != "" {
			// ctr takes --runc-binary only for runc-v2; other runtimes get a config file.
			if rt == runtimeA {
				args = append(args, "--runc-binary", b.lane.binary)
			} else {
				args = append(args, "--runtime-config-path", b.binaryConfig)
			}
		}
		_, stderr, code, err := b.d.Ctr(b.ctx, append(args, harness.ImageName, b.id("ctr"), "true")...)
		if err != nil || code != 0 {
			return fmt.Errorf("ctr run: code %d %v %s", code, err, stderr)
		}
		s.add(rt, ms(time.Since(t0)))
		return nil
	})
}

// execCycle: Exec -> Wait -> Start -> exit -> Delete of `true` in a running container.
func (b *bench) execCycle() error {
	s := b.newSample("exec", "exec cycle of `true` (Go client)", "ms", true)
	tasks := map[string]containerd.Task{}
	var execSpec *specs.Process
	for _, rt := range []string{runtimeA, runtimeB} {
		c, task, stop, err := b.sleeper(rt, b.id("exec"))
		if err != nil {
			return err
		}
		defer stop()
		spec, err := c.Spec(b.ctx)
		if err != nil {
			return err
		}
		execSpec = spec.Process
		execSpec.Args = []string{"true"}
		tasks[rt] = task
	}
	one := func(s *sample, rt string) error {
		t0 := time.Now()
		p, err := tasks[rt].Exec(b.ctx, b.id("e"), execSpec, cio.NullIO)
		if err != nil {
			return err
		}
		if _, err := b.runOnce(p); err != nil {
			return err
		}
		s.add(rt, ms(time.Since(t0)))
		return nil
	}
	if err := b.both(b.cfg.iterations*2, func(rt string) error { return one(s, rt) }); err != nil {
		return err
	}
	// The same after a pause, as a probe or a kubectl exec comes on a quiet
	// node: the runtime's cgroup join then waits for the kernel's migration
	// lock (an RCU grace period) in full, where back-to-back execs find it
	// partly warm (docs/benchmarks.md, "Container start and the cgroup
	// migration lock").
	cold := b.newSample("exec-cold", "exec cycle of `true` after 300 ms without an exec", "ms", true)
	return b.both(b.cfg.iterations, func(rt string) error {
		time.Sleep(300 * time.Millisecond)
		return one(cold, rt)
	})
}

// exitLatency: the init is SIGKILLed from here at t0; the sample is the time
// until /tasks/exit for it reaches an event subscriber.
func (b *bench) exitLatency() error {
	s := b.newSample("exit-event", "exit -> /tasks/exit received", "ms", true)
	evc, errc := b.client.EventService().Subscribe(b.ctx, `topic=="/tasks/exit"`)
	return b.both(b.cfg.iterations, func(rt string) error {
		c, task, stop, err := b.sleeper(rt, b.id("exit"))
		if err != nil {
			return err
		}
		defer stop()
		time.Sleep(20 * time.Millisecond)
		t0 := time.Now()
		if err := syscall.Kill(int(task.Pid()), syscall.SIGKILL); err != nil {
			return err
		}
		for {
			select {
			case env := <-evc:
				v, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					return err
				}
				if e, ok := v.(*apievents.TaskExit); ok && e.ContainerID == c.ID() {
					s.add(rt, ms(time.Since(t0)))
					ch, _ := task.Wait(b.ctx)
					<-ch
					return nil
				}
			case err := <-errc:
				return err
			case <-time.After(30 * time.Second):
				return fmt.Errorf("no /tasks/exit for %s", c.ID())
			}
		}
	})
}
