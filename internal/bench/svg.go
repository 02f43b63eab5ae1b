package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"time"
)

// Layout of the latency picture.
const (
	svgWidth      = 900
	svgHeight     = 440
	svgLeft       = 70
	svgRight      = 30
	svgTop        = 60
	svgBottom     = 60
	binsperDecade = 20
)

// WriteSVG draws a histogram of the sorted durations on a logarithmic time axis, with a marker
// at each percentile of lat, as a self-contained SVG document.
func WriteSVG(w io.Writer, sorted []time.Duration, lat Latency, title string) error {
	var b bytes.Buffer
	plotW := float64(svgWidth - svgLeft - svgRight)
	plotH := float64(svgHeight - svgTop - svgBottom)
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">
<rect width="100%%" height="100%%" fill="white"/>
`, svgWidth, svgHeight, svgWidth, svgHeight)
	text(&b, svgWidth/2, 24, "middle", 15, title)
	text(&b, svgWidth/2, 42, "middle", 12, fmt.Sprintf("%d requests; latency on a logarithmic scale", len(sorted)))

	if len(sorted) == 0 {
		text(&b, svgWidth/2, svgHeight/2, "middle", 14, "no requests measured")
		b.WriteString("</svg>\n")
		_, err := w.Write(b.Bytes())
		return err
	}

	// The axis spans whole decades of nanoseconds around the data.
	lo := math.Floor(math.Log10(math.Max(float64(sorted[0]), 1)))
	hi := math.Ceil(math.Log10(math.Max(float64(sorted[len(sorted)-1]), 1)))
	if hi <= lo {
		hi = lo + 1
	}
	nbins := int(hi-lo) * binsperDecade
	counts := make([]int, nbins)
	for _, d := range sorted {
		i := int((math.Log10(math.Max(float64(d), 1)) - lo) * binsperDecade)
		counts[min(max(i, 0), nbins-1)]++
	}
	maxCount := 1
	for _, c := range counts {
		maxCount = max(maxCount, c)
	}
	x := func(ns float64) float64 {
		return svgLeft + (math.Log10(math.Max(ns, 1))-lo)/(hi-lo)*plotW
	}
	y := func(c int) float64 { return svgTop + plotH - float64(c)/float64(maxCount)*plotH }

	// Bars.
	barW := plotW / float64(nbins)
	for i, c := range counts {
		if c == 0 {
			continue
		}
		fmt.Fprintf(&b, `<rect x="%.2f" y="%.2f" width="%.2f" height="%.2f" fill="#4a7bd0"><title>%s to %s: %d</title></rect>
`, svgLeft+float64(i)*barW, y(c), math.Max(barW-1, 0.5), float64(svgTop)+plotH-y(c),
			fmtDur(time.Duration(math.Pow(10, lo+float64(i)/binsperDecade))),
			fmtDur(time.Duration(math.Pow(10, lo+float64(i+1)/binsperDecade))), c)
	}

	// Axes, ticks at 1, 2 and 5 of every decade, and the count scale.
	fmt.Fprintf(&b, `<line x1="%d" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>
<line x1="%d" y1="%d" x2="%d" y2="%.0f" stroke="black"/>
`, svgLeft, svgTop+plotH, svgLeft+plotW, svgTop+plotH, svgLeft, svgTop, svgLeft, svgTop+plotH)
	for e := lo; e <= hi; e++ {
		for _, m := range []float64{1, 2, 5} {
			ns := m * math.Pow(10, e)
			if math.Log10(ns) > hi+1e-9 {
				break
			}
			px := x(ns)
			fmt.Fprintf(&b, `<line x1="%.2f" y1="%.0f" x2="%.2f" y2="%.0f" stroke="black"/>
`, px, svgTop+plotH, px, svgTop+plotH+5)
			text(&b, px, svgTop+plotH+18, "middle", 11, fmtDur(time.Duration(ns)))
		}
	}
	text(&b, svgLeft+plotW/2, svgHeight-14, "middle", 12, "latency")
	for _, frac := range []float64{0.5, 1} {
		c := int(float64(maxCount) * frac)
		text(&b, svgLeft-6, y(c)+4, "end", 11, fmt.Sprint(c))
		fmt.Fprintf(&b, `<line x1="%d" y1="%.2f" x2="%d" y2="%.2f" stroke="black"/>
`, svgLeft-4, y(c), svgLeft, y(c))
	}
	fmt.Fprintf(&b, `<text x="18" y="%.0f" text-anchor="middle" transform="rotate(-90 18 %.0f)">requests</text>
`, svgTop+plotH/2, svgTop+plotH/2)

	// Percentile markers, labels stepped down so that close markers stay readable.
	marks := []struct {
		name   string
		ms     float64
		colour string
	}{
		{"p50", lat.P50, "#2a9d4b"},
		{"p90", lat.P90, "#d9a400"},
		{"p99", lat.P99, "#e07000"},
		{"p99.9", lat.P999, "#c0392b"},
		{"max", lat.Max, "#7d3c98"},
	}
	for i, m := range marks {
		px := x(m.ms * 1e6)
		fmt.Fprintf(&b, `<line x1="%.2f" y1="%d" x2="%.2f" y2="%.0f" stroke="%s" stroke-width="1.5" stroke-dasharray="5,3"/>
`, px, svgTop, px, svgTop+plotH, m.colour)
		anchor := "start"
		lx := px + 4
		if px > svgLeft+plotW*0.85 {
			anchor, lx = "end", px-4
		}
		text(&b, lx, float64(svgTop+14+14*i), anchor, 11, m.name+" "+fmtMS(m.ms))
	}
	b.WriteString("</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

// text writes an escaped text element.
func text[X, Y int | float64](b *bytes.Buffer, x X, y Y, anchor string, size int, s string) {
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d">`, float64(x), float64(y), anchor, size)
	xml.EscapeText(b, []byte(s))
	b.WriteString("</text>\n")
}
