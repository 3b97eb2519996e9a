package main

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"time"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// upgradePauseRe reads the pause from a line of `upgrade`'s report
// ("pid 123: a -> b, pause 6.1 ms (/path)").
var upgradePauseRe = regexp.MustCompile(`pause ([0-9.]+) ms`)

// upgradePause measures the in-place upgrade's pause (issue 14: no request
// served from the connections' pause until the new binary serves) on a pod
// shim of podSizes[0] containers. B only: the stock shim cannot be upgraded
// without stopping its containers. The daemon is upgraded to the binary it was
// started from (the command's default, as after `make install`): the whole
// handover, without a second build.
func (b *bench) upgradePause() error {
	n := b.cfg.podSizes[0]
	s := b.newSample("upgrade-pause", fmt.Sprintf("in-place upgrade of a pod shim with %d containers: pause (B only; the stock shim has none)", n), "ms", true)
	p := b.newPod(runtimeB)
	defer p.stopAll()
	if err := p.start(n, 1); err != nil {
		return err
	}
	shim, err := p.shim()
	if err != nil {
		return err
	}
	socket := argAfter(shim.Args, "-socket")
	if socket == "" {
		return fmt.Errorf("pod shim %v: no -socket", shim)
	}
	for i := 0; i < b.cfg.upgrades; i++ {
		time.Sleep(200 * time.Millisecond) // let the previous switch's new binary settle
		out, err := exec.Command(harness.ShimUnderTest(), "upgrade", "-address", socket).CombinedOutput()
		if err != nil {
			return fmt.Errorf("upgrade %s: %w: %s", socket, err, out)
		}
		m := upgradePauseRe.FindSubmatch(out)
		if m == nil {
			return fmt.Errorf("upgrade %s: no pause in %q", socket, out)
		}
		v, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			return fmt.Errorf("upgrade %s: pause %q: %w", socket, m[1], err)
		}
		s.add(runtimeB, v)
	}
	return nil
}
