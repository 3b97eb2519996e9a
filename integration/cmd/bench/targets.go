package main

import (
	"fmt"
	"math"
	"strings"
)

// The targets of issues 12 and 13, evaluated per lane from the rows.
type target struct {
	name string
	// eval returns the shown value and whether it meets the target; ok is
	// false when the lane lacks the rows.
	eval func(r *laneResult) (value string, met, ok bool)
}

// ratioAtMost: the row's B/A ratio is at most limit.
func ratioAtMost(key string, limit float64) func(*laneResult) (string, bool, bool) {
	return func(r *laneResult) (string, bool, bool) {
		s := r.find(key)
		if s == nil {
			return "", false, false
		}
		a, b := s.stat()
		if a <= 0 || b <= 0 {
			// The floor measured above a shim's whole cycle: the floor was
			// slower in its own loop than inside the cycle (a cold lock, other
			// load), and no ratio can be claimed from such a run, either way.
			return fmt.Sprintf("A %s, B %s: the floor measured above a cycle, no ratio", num(a), num(b)), false, true
		}
		ratio := b / a
		return fmt.Sprintf("%.2f (A %s, B %s %s)", ratio, num(a), num(b), s.unit), ratio <= limit, true
	}
}

// bAtMost: B's value of the row is at most limit.
func bAtMost(key string, limit float64) func(*laneResult) (string, bool, bool) {
	return func(r *laneResult) (string, bool, bool) {
		s := r.find(key)
		if s == nil || len(s.b) == 0 {
			return "", false, false
		}
		_, b := s.stat()
		return fmt.Sprintf("%s %s", num(b), s.unit), b <= limit, true
	}
}

func targets(results []*laneResult) []target {
	ts := []target{
		{"lifecycle: shim overhead ≤ 0.5× stock's", ratioAtMost("lifecycle-overhead", 0.5)},
		{"exec cycle: shim overhead ≤ 0.5× stock's", ratioAtMost("exec-overhead", 0.5)},
	}
	for _, mode := range []string{"fifo", "tty"} {
		for _, size := range echoSizes {
			for _, p := range []string{"p50", "p99"} {
				ts = append(ts, target{
					fmt.Sprintf("echo %s %s %s ≤ 0.8× stock", sizeName(size), mode, p),
					ratioAtMost(fmt.Sprintf("echo-%s-%d-%s", mode, size, p), 0.8),
				})
			}
		}
	}
	ts = append(ts,
		target{"exec probes: shim CPU per probe ≤ 0.8× stock's", ratioAtMost("probe-cpu", 0.8)},
		target{"idle anonymous memory ≤ 2.0 MiB", bAtMost("idle-anon", 2048)},
	)
	// The leanest stock shim of the run (the lowest A across lanes).
	leanest := math.Inf(1)
	for _, r := range results {
		if s := r.find("idle-anon"); s != nil && len(s.a) > 0 {
			a, _ := s.stat()
			leanest = min(leanest, a)
		}
	}
	if !math.IsInf(leanest, 1) {
		ts = append(ts, target{fmt.Sprintf("idle anonymous memory ≤ 0.85× the leanest stock shim's (%s KiB)", num(leanest)),
			bAtMost("idle-anon", 0.85*leanest)})
	}
	ts = append(ts, target{"each extra pod container ≤ 24 KiB anonymous", bAtMost("pod-anon-per-ctr", 24)})
	// Issue 13: a pod of this shim's sandboxer against a stock pod with a pause container.
	ts = append(ts,
		target{"issue 13: RunPodSandbox, sandboxer = \"shim\" ≤ 0.5× stock podsandbox", ratioAtMost("sbx-run", 0.5)},
		target{"issue 13: RunPodSandbox → first container running ≤ 0.5× stock podsandbox", ratioAtMost("sbx-first", 0.5)},
		target{"issue 13: memory per pod (RSS 3 s after start, shim + holder vs shim + pause) ≤ 0.5× stock", ratioAtMost("sbx-rss", 0.5)},
		target{"issue 13: memory per pod (anonymous) ≤ 0.5× stock", ratioAtMost("sbx-anon", 0.5)},
		target{"issue 13: memory per pod (RSS, mean while CRI polls) ≤ 0.5× stock", ratioAtMost("sbx-rss-mean", 0.5)},
	)
	// Issue 14: the in-place upgrade's pause (a pod shim of 10 containers in the full run).
	ts = append(ts, target{"issue 14: in-place upgrade pause of a pod shim ≤ 50 ms", bAtMost("upgrade-pause", 50)})
	return ts
}

func renderTargets(results []*laneResult) string {
	var sb strings.Builder
	sb.WriteString("### Targets (issues 12, 13 and 14)\n\n| target |")
	sep := "|---|"
	for _, r := range results {
		fmt.Fprintf(&sb, " %s |", r.lane)
		sep += "---|"
	}
	sb.WriteString("\n" + sep + "\n")
	for _, t := range targets(results) {
		var cells []string
		any := false
		for _, r := range results {
			v, met, ok := t.eval(r)
			if !ok {
				cells = append(cells, "")
				continue
			}
			any = true
			verdict := "not met"
			if met {
				verdict = "met"
			}
			cells = append(cells, fmt.Sprintf("%s: **%s**", v, verdict))
		}
		if any {
			fmt.Fprintf(&sb, "| %s | %s |\n", t.name, strings.Join(cells, " | "))
		}
	}
	return sb.String()
}
