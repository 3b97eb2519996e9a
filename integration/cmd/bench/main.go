// Command bench measures containerd-shim-example-v2 against containerd's
// stock containerd-shim-runc-v2, side by side in one run: one private
// containerd per lane (a containerd release and an OCI runtime), the same
// runtime for both shims, the two alternating (A = stock runc-v2, B = this
// shim), beside floor rows that measure the runtime and the host alone.
// It prints medians (or percentiles), min-max and the B/A ratio, and can draw
// the ratios as an SVG chart.
//
//	go run ./cmd/bench [-quick] [-lanes 1.6,2.x,1.6/crun] [-out f.md] [-chart f.svg] [-only steps]
//
// Timings here are for reading, not for asserting: no test depends on them.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

const (
	runtimeA = "io.containerd.runc.v2" // baseline: containerd's stock shim
	runtimeB = "io.example.v2"         // this shim
)

// lane is one column group of the report: a containerd flavor and the OCI
// runtime both shims run ("" = runc).
type lane struct {
	flavor, binary string
}

func (l lane) String() string {
	rt := l.binary
	if rt == "" {
		rt = "runc"
	}
	return "containerd " + l.flavor + ", " + rt
}

// parseLanes reads "1.6,2.x,1.6/crun".
func parseLanes(s string) ([]lane, error) {
	var out []lane
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		flavor, binary, _ := strings.Cut(f, "/")
		if binary == "runc" {
			binary = ""
		}
		out = append(out, lane{flavor: flavor, binary: binary})
	}
	if len(out) == 0 {
		return nil, errors.New("no lanes")
	}
	return out, nil
}

type config struct {
	quick      bool
	lanes      []lane
	iterations int // samples per A/B row (lifecycle, ctr, exit; exec gets twice as many)
	roundTrips int // interactive echo round trips per size, mode and shim
	probes     int // CRI ExecSync probes per shim
	podStarts  int // CRI RunPodSandbox -> Create -> Start samples per shim
	// sandboxPods: pods per shim of the pod sandbox rows (2.x lanes), running side by side
	sandboxPods int
	// sandboxWindow: how long the pod sandbox rows keep reading the pods' memory after the
	// first read (a mean over CRI's metrics polls and the shims' trims)
	sandboxWindow time.Duration
	throughput    int64 // bytes per throughput run
	podSizes      []int // sequential pod: memory measured at both sizes
	podWorkers    int   // concurrent pod start: containers started at a time
	podRounds     int   // sequential pods per shim (the per-container rows are small differences: medians of several)
	upgrades      int   // in-place upgrades of one pod shim (B only)
	out, chart    string
	only          string // comma-separated step names (substrings) to run; empty: all
	floorReq      string // internal: run the runtime floor from this request file (see floor.go)
}

// fullLanes are what `make bench` runs: containerd 1.6 and the newest 2.x
// with runc, and 1.6 with crun.
const fullLanes = "1.6,2.x,1.6/crun"

func main() {
	var c config
	var lanes, flavor, binary string
	flag.BoolVar(&c.quick, "quick", false, "a short run (about a minute) for CI smoke testing: one lane, fewer samples")
	flag.StringVar(&lanes, "lanes", "", "comma-separated lanes, each a containerd flavor with an optional /runtime (default "+fullLanes+"; -quick: 1.6)")
	flag.StringVar(&flavor, "flavor", "", "one lane of this containerd flavor (1.6 or 2.x; with -runtime-binary)")
	flag.StringVar(&binary, "runtime-binary", "", "OCI runtime both shims run in the -flavor lane (BinaryName), e.g. crun; such a lane's daemon runs in a private mount namespace without /sys/fs/cgroup/unified (crun 1.8 refuses hybrid cgroups)")
	flag.StringVar(&c.out, "out", "", "also write the report (markdown) to this file")
	flag.StringVar(&c.chart, "chart", "", "also draw the B/A ratios of every lane as an SVG chart into this file")
	flag.StringVar(&c.only, "only", "", "run only the steps whose names contain one of these comma-separated words (e.g. throughput,exec)")
	flag.StringVar(&c.floorReq, "floor-request", "", "internal: measure the runtime floor described by this file and print the samples as JSON")
	flag.Parse()
	if c.floorReq != "" {
		if err := runFloorRequest(c.floorReq, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "bench floor: %v\n", err)
			os.Exit(1)
		}
		return
	}
	switch {
	case flavor != "" || binary != "":
		if flavor == "" {
			flavor = "1.6"
		}
		lanes = flavor + "/" + binary
	case lanes == "" && c.quick:
		lanes = "1.6"
	case lanes == "":
		lanes = fullLanes
	}
	var err error
	if c.lanes, err = parseLanes(lanes); err != nil {
		fmt.Fprintf(os.Stderr, "bench: -lanes: %v\n", err)
		os.Exit(2)
	}
	c.iterations, c.roundTrips, c.probes, c.podStarts = 30, 400, 400, 10
	c.throughput, c.podSizes, c.podWorkers, c.upgrades = 1<<30, []int{10, 50}, 8, 5
	c.podRounds = 3
	c.sandboxPods, c.sandboxWindow = 6, 30*time.Second
	if c.quick {
		c.iterations, c.roundTrips, c.probes, c.podStarts = 5, 60, 40, 2
		c.throughput, c.podSizes, c.upgrades = 256<<20, []int{5, 20}, 2
		c.podRounds = 1
		c.sandboxPods, c.sandboxWindow = 2, 5*time.Second
	}
	if err := run(c); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// selected reports whether a step runs under -only.
func selected(only, step string) bool {
	if only == "" {
		return true
	}
	for _, w := range strings.Split(only, ",") {
		if w = strings.TrimSpace(w); w != "" && strings.Contains(step, w) {
			return true
		}
	}
	return false
}

func run(cfg config) error {
	start := time.Now()
	var results []*laneResult
	for _, l := range cfg.lanes {
		fmt.Fprintf(os.Stderr, "bench: lane %s\n", l)
		r, err := runLane(cfg, l)
		if err != nil {
			return fmt.Errorf("%s: %w", l, err)
		}
		results = append(results, r)
	}
	report := renderReport(cfg, results, time.Since(start))
	fmt.Print(report)
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(report), 0o644); err != nil {
			return err
		}
	}
	if cfg.chart != "" {
		if err := os.WriteFile(cfg.chart, []byte(renderChart(results)), 0o644); err != nil {
			return err
		}
	}
	return nil
}
