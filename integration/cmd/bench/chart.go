package main

import (
	"fmt"
	"html"
	"math"
	"strings"
	"time"
)

// renderChart draws every row's B/A ratio, one bar per lane, on a log scale
// around 1 (the stock shim): an SVG the report links to.
func renderChart(results []*laneResult) string {
	const (
		width   = 1220
		labelW  = 600
		plotX0  = labelW + 20
		plotX1  = width - 40
		barH    = 9
		rowGap  = 9
		headerH = 96
		lo, hi  = 0.02, 20.0
	)
	colors := []string{"#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#9c755f"}
	x := func(v float64) float64 {
		v = math.Max(lo, math.Min(hi, v))
		return plotX0 + (math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))*(plotX1-plotX0)
	}
	type row struct {
		name      string
		lowerWins bool
		ratios    []float64 // per lane; NaN when absent
	}
	var rows []row
	for _, k := range orderedKeys(results) {
		r := row{ratios: make([]float64, len(results))}
		has := false
		for i, lr := range results {
			r.ratios[i] = math.NaN()
			s := lr.find(k)
			if s == nil {
				continue
			}
			if v, ok := s.ratio(); ok {
				r.ratios[i], r.name, r.lowerWins, has = v, s.name, s.lowerWins, true
			}
		}
		if has {
			rows = append(rows, r)
		}
	}
	rowH := len(results)*barH + rowGap
	height := headerH + len(rows)*rowH + 30

	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Arial, sans-serif">`+"\n", width, height, width, height)
	fmt.Fprintf(&sb, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&sb, `<text x="20" y="26" font-size="16" font-weight="bold">containerd-shim-example-v2 / containerd-shim-runc-v2 (B/A), %s</text>`+"\n", time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&sb, `<text x="20" y="46" font-size="12">Log scale. Left of 1: B lower than stock (better for times, CPU, memory); rows marked ↑: higher is better. Red label: B worse than stock.</text>`+"\n")
	for i, r := range results {
		lx := 20 + i*300
		fmt.Fprintf(&sb, `<rect x="%d" y="58" width="14" height="10" fill="%s"/><text x="%d" y="67" font-size="12">%s</text>`+"\n", lx, colors[i%len(colors)], lx+20, html.EscapeString(r.lane.String()))
	}
	// Axis: grid lines and ticks.
	top, bottom := float64(headerH-10), float64(height-26)
	for _, t := range []float64{0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20} {
		stroke, w := "#ddd", 1.0
		if t == 1 {
			stroke, w = "#333", 1.5
		}
		fmt.Fprintf(&sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%.1f"/>`+"\n", x(t), top, x(t), bottom, stroke, w)
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%g</text>`+"\n", x(t), top-4, t)
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%g</text>`+"\n", x(t), bottom+14, t)
	}
	for i, r := range rows {
		y0 := headerH + i*rowH
		label := r.name
		if !r.lowerWins {
			label += " ↑"
		}
		if len([]rune(label)) > 92 {
			label = string([]rune(label)[:91]) + "…"
		}
		if i%2 == 0 {
			fmt.Fprintf(&sb, `<rect x="10" y="%d" width="%d" height="%d" fill="#f6f6f6"/>`+"\n", y0-2, width-20, rowH-4)
		}
		fmt.Fprintf(&sb, `<text x="%d" y="%d" font-size="11" text-anchor="end">%s</text>`+"\n", labelW, y0+len(results)*barH/2+4, html.EscapeString(label))
		for j, v := range r.ratios {
			if math.IsNaN(v) {
				continue
			}
			by := y0 + j*barH
			x1, x2 := x(1), x(v)
			if x2 < x1 {
				x1, x2 = x2, x1
			}
			fmt.Fprintf(&sb, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x1, by, math.Max(x2-x1, 1), barH-1, colors[j%len(colors)])
			worse := (r.lowerWins && v > 1) || (!r.lowerWins && v < 1)
			fill := "#000"
			if worse {
				fill = "#c00"
			}
			tx, anchor := x(v)+4, "start"
			if v < 1 {
				tx, anchor = x(v)-4, "end"
			}
			fmt.Fprintf(&sb, `<text x="%.1f" y="%d" font-size="9" fill="%s" text-anchor="%s">%.2f</text>`+"\n", tx, by+barH-1, fill, anchor, v)
		}
	}
	sb.WriteString("</svg>\n")
	return sb.String()
}
