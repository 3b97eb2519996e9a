package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// rowOrder is the report's order of rows (keys); rows not listed follow in
// the order they were measured.
var rowOrder = []string{
	"lifecycle", "lifecycle-teardown", floorCSD, "lifecycle-overhead", floorRun, floorCreate, floorStart, floorDelete, "ctr-run",
	"exec", floorExecD, "exec-overhead", floorExecFore, "exec-cold",
	"probe-p50", "probe-p99", "probe-overhead", "probe-cpu", "cri-pod-start",
	"sbx-run", "sbx-first", "sbx-rss", "sbx-anon", "sbx-shim-rss", "sbx-rss-mean", "sbx-anon-mean",
	"exit-event",
	"echo-fifo-8-p50", "echo-fifo-8-p99", "echo-fifo-8-cpu", "echo-fifo-4096-p50", "echo-fifo-4096-p99", "echo-fifo-4096-cpu", "echo-fifo-65536-p50", "echo-fifo-65536-p99", "echo-fifo-65536-cpu",
	"echo-tty-8-p50", "echo-tty-8-p99", "echo-tty-8-cpu", "echo-tty-4096-p50", "echo-tty-4096-p99", "echo-tty-4096-cpu", "echo-tty-65536-p50", "echo-tty-65536-p99", "echo-tty-65536-cpu",
	"echo-floor-8-p50", "echo-floor-8-p99", "echo-floor-4096-p50", "echo-floor-4096-p99", "echo-floor-65536-p50", "echo-floor-65536-p99",
	"throughput", "throughput-cpu", "throughput-ctr", "throughput-floor",
	"idle-rss", "idle-uss", "idle-anon", "idle-threads",
	"pod-seq-start-lo", "pod-seq-start", "pod-conc-start",
	"pod-rss-lo", "pod-rss", "pod-anon", "pod-rss-per-ctr", "pod-anon-per-ctr", "pod-conc-rss", "pod-conc-anon",
	"upgrade-pause",
}

// addDerived adds the rows computed from others: what each shim path adds
// on top of the runtime's own calls.
func addDerived(r *laneResult) {
	r.overhead("lifecycle-overhead", "lifecycle overhead over the floor (lifecycle − create+start+delete floor)", "lifecycle", floorCSD)
	r.overhead("exec-overhead", "exec overhead over the floor (exec cycle − `exec --detach` floor)", "exec", floorExecD)
	r.overhead("probe-overhead", "exec probe overhead over the floor (ExecSync p50 − `exec --detach` floor)", "probe-p50", floorExecD)
}

// orderedKeys lists every row key of the lanes in report order.
func orderedKeys(results []*laneResult) []string {
	seen := map[string]bool{}
	var keys []string
	present := map[string]bool{}
	for _, r := range results {
		for _, s := range r.results {
			present[s.key] = true
		}
	}
	for _, k := range rowOrder {
		if present[k] && !seen[k] {
			keys, seen[k] = append(keys, k), true
		}
	}
	for _, r := range results {
		for _, s := range r.results {
			if !seen[s.key] {
				keys, seen[s.key] = append(keys, s.key), true
			}
		}
	}
	return keys
}

func rowName(results []*laneResult, key string) (name, unit string) {
	for _, r := range results {
		if s := r.find(key); s != nil {
			return s.name, s.unit
		}
	}
	return key, ""
}

var loadAtStart = loadAvg()

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func commandLine(cfg config) string {
	cmd := "go run ./cmd/bench"
	if cfg.quick {
		cmd += " -quick"
	}
	var lanes []string
	for _, l := range cfg.lanes {
		if l.binary != "" {
			lanes = append(lanes, l.flavor+"/"+l.binary)
		} else {
			lanes = append(lanes, l.flavor)
		}
	}
	cmd += " -lanes " + strings.Join(lanes, ",")
	if cfg.only != "" {
		cmd += " -only " + cfg.only
	}
	return "cd integration && " + cmd
}

func renderReport(cfg config, results []*laneResult, took time.Duration) string {
	for _, r := range results {
		addDerived(r)
	}
	var sb strings.Builder
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	mode := "full"
	if cfg.quick {
		mode = "quick"
	}
	fmt.Fprintf(&sb, "## Benchmark (%s), %s\n\n", mode, time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&sb, "Command: `%s`  \n", commandLine(cfg))
	fmt.Fprintf(&sb, "Machine: %s, %d cores, kernel %s; load average %s at the start, %s at the end; took %s.  \n",
		host, runtime.NumCPU(), strings.TrimSpace(string(kernel)), loadAtStart, loadAvg(), took.Round(time.Second))
	for _, r := range results {
		fmt.Fprintf(&sb, "Lane *%s*: %s, %s; took %s.  \n", r.lane, r.containerd, r.version, r.took.Round(time.Second))
	}
	fmt.Fprintf(&sb, "A = `%s` (containerd's stock shim), B = `%s` (this shim); runs alternate A/B. "+
		"Ratio = B/A (lower is better for times, CPU and memory; higher for throughput). "+
		"*floor* rows measure the runtime or the host alone (no shim, no containerd): their value stands in column A. "+
		"*overhead* rows are a cycle's median minus its floor's median.\n\n", runtimeA, runtimeB)

	keys := orderedKeys(results)
	// The summary: one A | B | B/A group per lane.
	fmt.Fprintf(&sb, "| measure | unit |")
	sep := "|---|---|"
	for _, r := range results {
		fmt.Fprintf(&sb, " %s: A | B | B/A |", r.lane)
		sep += "---|---|---|"
	}
	sb.WriteString("\n" + sep + "\n")
	for _, k := range keys {
		name, unit := rowName(results, k)
		fmt.Fprintf(&sb, "| %s | %s |", name, unit)
		for _, r := range results {
			s := r.find(k)
			if s == nil {
				sb.WriteString(" | | |")
				continue
			}
			a, b := s.stat()
			as, bs, rs := num(a), num(b), "–"
			if len(s.a) == 0 {
				as = "–"
			}
			if len(s.b) == 0 {
				bs = ""
				if !s.floor {
					bs = "–"
				}
			}
			if ratio, ok := s.ratio(); ok {
				rs = fmt.Sprintf("%.2f", ratio)
			}
			fmt.Fprintf(&sb, " %s | %s | %s |", as, bs, rs)
		}
		sb.WriteString("\n")
	}
	sb.WriteString("\n")
	sb.WriteString(renderTargets(results))
	for _, r := range results {
		fmt.Fprintf(&sb, "\n### %s: medians (or the row's percentile) with min–max\n\n", r.lane)
		fmt.Fprintf(&sb, "| measure | unit | A | B | B/A |\n|---|---|---|---|---|\n")
		for _, k := range keys {
			s := r.find(k)
			if s == nil {
				continue
			}
			rs := "–"
			if ratio, ok := s.ratio(); ok {
				rs = fmt.Sprintf("%.2f", ratio)
			}
			fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s |\n", s.name, s.unit, cell(s.a, s.pct), cell(s.b, s.pct), rs)
		}
		for _, n := range r.notes {
			fmt.Fprintf(&sb, "\n%s\n", n)
		}
	}
	return sb.String()
}
