package main

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// sample is one measured quantity for both shims (or, for a floor row, for
// the runtime or host alone: then only a holds values).
type sample struct {
	key        string // stable id across lanes (the report's row)
	name, unit string
	a, b       []float64
	lowerWins  bool
	pct        float64 // the statistic shown: 50 = median, 99 = p99
	floor      bool    // measured without any shim; a holds the values
	derived    bool    // computed from other rows (one value each)
}

func (s *sample) add(rt string, v float64) {
	if rt == runtimeA {
		s.a = append(s.a, v)
	} else {
		s.b = append(s.b, v)
	}
}

func (s *sample) values(rt string) []float64 {
	if rt == runtimeA {
		return s.a
	}
	return s.b
}

func (s *sample) last(rt string) float64 {
	v := s.values(rt)
	if len(v) == 0 {
		return 0
	}
	return v[len(v)-1]
}

// stat returns the row's statistic (median or percentile) of A's and B's values.
func (s *sample) stat() (a, b float64) {
	return percentile(s.a, s.pct), percentile(s.b, s.pct)
}

// ratio is B/A of the row's statistic; ok is false when it has no meaning.
func (s *sample) ratio() (float64, bool) {
	a, b := s.stat()
	if s.floor || len(s.a) == 0 || len(s.b) == 0 || a <= 0 || b < 0 {
		return 0, false
	}
	return b / a, true
}

// percentile is the p-th percentile (nearest rank; 50 is the usual median,
// the mean of the middle two for an even count).
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if p == 50 {
		m := s[len(s)/2]
		if len(s)%2 == 0 {
			m = (s[len(s)/2-1] + s[len(s)/2]) / 2
		}
		return m
	}
	rank := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(rank, len(s)-1))]
}

func minMax(v []float64) (lo, hi float64) {
	if len(v) == 0 {
		return 0, 0
	}
	lo, hi = v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

// cell formats one side of a row: statistic (min–max), or the value alone
// when there is one sample.
func cell(v []float64, p float64) string {
	if len(v) == 0 {
		return "–"
	}
	m := percentile(v, p)
	if len(v) == 1 {
		return num(m)
	}
	lo, hi := minMax(v)
	return fmt.Sprintf("%s (%s–%s)", num(m), num(lo), num(hi))
}

func num(v float64) string {
	av := math.Abs(v)
	switch {
	case av >= 100:
		return fmt.Sprintf("%.0f", v)
	case av >= 10:
		return fmt.Sprintf("%.1f", v)
	case av >= 1:
		return fmt.Sprintf("%.2f", v)
	case av == 0:
		return "0"
	default:
		return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
	}
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// find returns a lane's row by key.
func (r *laneResult) find(key string) *sample {
	for _, s := range r.results {
		if s.key == key {
			return s
		}
	}
	return nil
}

// overhead adds the row "cycle − floor" for both shims: what containerd and
// the shim add on top of the runtime's own work (the floor is the same for
// both, so the ratio is of what each shim path adds).
func (r *laneResult) overhead(key, name, cycleKey string, floorKeys ...string) {
	cycle := r.find(cycleKey)
	if cycle == nil {
		return
	}
	var floor float64
	for _, k := range floorKeys {
		f := r.find(k)
		if f == nil {
			return
		}
		floor += percentile(f.a, 50)
	}
	a, b := cycle.stat()
	r.results = append(r.results, &sample{key: key, name: name, unit: cycle.unit, lowerWins: true, pct: 50, derived: true,
		a: []float64{a - floor}, b: []float64{b - floor}})
}
