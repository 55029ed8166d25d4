package sim

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"time"
)

// series is one line of a chart.
type series struct {
	Name   string
	Color  string
	Points [][2]float64
}

// svgChart draws line series in an SVG of its own: no scripts, no
// dependencies, readable in any browser.
func svgChart(title, xLabel, yLabel string, ss []series) template.HTML {
	const w, h, pad = 640.0, 300.0, 50.0
	maxX, maxY := 0.0, 0.0
	for _, s := range ss {
		for _, p := range s.Points {
			maxX, maxY = math.Max(maxX, p[0]), math.Max(maxY, p[1])
		}
	}
	if maxX == 0 {
		maxX = 1
	}
	if maxY == 0 {
		maxY = 1
	}
	x := func(v float64) float64 { return pad + v/maxX*(w-2*pad) }
	y := func(v float64) float64 { return h - pad - v/maxY*(h-2*pad) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`, w, h)
	fmt.Fprintf(&b, `<text x="%.0f" y="16" font-size="13" font-weight="bold">%s</text>`, pad, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#333"/>`, pad, h-pad, w-pad, h-pad)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#333"/>`, pad, pad, pad, h-pad)
	for i := 0; i <= 4; i++ {
		fx, fy := maxX*float64(i)/4, maxY*float64(i)/4
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">%.3g</text>`, x(fx), h-pad+15, fx)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">%.3g</text>`, pad-4, y(fy)+4, fy)
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">%s</text>`, w/2, h-12, template.HTMLEscapeString(xLabel))
	fmt.Fprintf(&b, `<text x="12" y="%.0f" transform="rotate(-90 12 %.0f)" text-anchor="middle">%s</text>`, h/2, h/2, template.HTMLEscapeString(yLabel))
	for i, s := range ss {
		if len(s.Points) == 0 {
			continue
		}
		var pts []string
		for _, p := range s.Points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p[0]), y(p[1])))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, s.Color, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="%s">%s</text>`, w-pad-120, pad+14*float64(i), s.Color, template.HTMLEscapeString(s.Name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func cdf(secs []float64) [][2]float64 {
	var pts [][2]float64
	for i, v := range secs {
		pts = append(pts, [2]float64{v, float64(i+1) / float64(len(secs))})
	}
	return pts
}

var reportPage = template.Must(template.New("report").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Parley simulation {{.R.Digest}}</title>
<style>body{font-family:sans-serif;max-width:720px;margin:2em auto}td,th{padding:2px 10px;text-align:left}</style></head>
<body><h1>Parley simulation</h1>
<p>Plan digest <code>{{.R.Digest}}</code>: {{.R.Nodes}} nodes, {{.Sim}} simulated in {{.Wall}} of wall time.</p>
<table>
<tr><th>delivery</th><td>{{.R.Delivered}} of {{.R.Sent}} ({{printf "%.1f" .Pct}} %), {{.R.ShownTwice}} shown twice</td></tr>
<tr><th>direct latency</th><td>p50 {{printf "%.0f" .R.Direct.P50}} ms, p95 {{printf "%.0f" .R.Direct.P95}} ms, p99 {{printf "%.0f" .R.Direct.P99}} ms ({{.R.Direct.N}})</td></tr>
<tr><th>inbox latency</th><td>p50 {{printf "%.0f" .R.Inbox.P50}} ms, p95 {{printf "%.0f" .R.Inbox.P95}} ms, p99 {{printf "%.0f" .R.Inbox.P99}} ms ({{.R.Inbox.N}})</td></tr>
<tr><th>presence resolve</th><td>{{printf "%.0f" .ResolvePct}} % of {{.R.ResolveTries}}, p50 {{printf "%.0f" .R.Resolve.P50}} ms</td></tr>
<tr><th>NOTIFY latency</th><td>p50 {{printf "%.0f" .R.Notify.P50}} ms, p95 {{printf "%.0f" .R.Notify.P95}} ms ({{.R.Notify.N}})</td></tr>
<tr><th>per node</th><td>{{printf "%.2f" .MB}} MB heap+stack (peak), {{printf "%.0f" .R.GoroutinesNode}} goroutines, {{printf "%.0f" .KB}} KB sent</td></tr>
<tr><th>replicas</th><td>at most {{.R.MaxHeldItems}} items held at once</td></tr>
</table>
{{.Latency}}
{{.Delivery}}
{{.Memory}}
{{range .R.Notes}}<p>note: {{.}}</p>{{end}}
</body></html>`))

// WriteReport writes the run as an HTML page with its plots.
func WriteReport(w io.Writer, r *Result) error {
	var delivered, sent, mem [][2]float64
	for _, s := range r.Samples {
		if s.At < 0 {
			continue // joining: counted in the peaks, not plotted
		}
		m := s.At.Minutes()
		delivered = append(delivered, [2]float64{m, float64(s.Delivered)})
		sent = append(sent, [2]float64{m, float64(s.Sent)})
		mem = append(mem, [2]float64{m, s.MemPerNode / 1e6})
	}
	pct := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return 100 * a / b
	}
	return reportPage.Execute(w, map[string]any{
		"R": r, "Sim": r.Simulated.Round(time.Second), "Wall": r.Wall.Round(time.Millisecond),
		"Pct": pct(float64(r.Delivered), float64(r.Sent)), "ResolvePct": 100 * r.ResolveSuccess,
		"MB": r.MemPerNode / 1e6, "KB": r.BytesPerNode / 1e3,
		"Latency": svgChart("Delivery latency (CDF)", "seconds from send to shown", "share of messages",
			[]series{{"direct", "#1f77b4", cdf(r.DirectCDF)}, {"through replicas", "#d62728", cdf(r.InboxCDF)}}),
		"Delivery": svgChart("Delivery over time", "simulated minutes", "messages",
			[]series{{"sent", "#7f7f7f", sent}, {"delivered", "#2ca02c", delivered}}),
		"Memory": svgChart("Memory per node", "simulated minutes", "MB (heap+stack / nodes up)",
			[]series{{"memory", "#9467bd", mem}}),
	})
}
