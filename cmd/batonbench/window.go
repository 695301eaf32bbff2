package main

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
)

// span is a stretch of a run, [From, To).
type span struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

func (s span) dur() time.Duration { return s.To.Sub(s.From) }

func (s span) has(t time.Time) bool { return !t.Before(s.From) && t.Before(s.To) }

// windowStats is what the clients saw in some spans of a run.
type windowStats struct {
	// Requests and Failed count the requests started in the spans.
	Requests, Failed int
	// P50 and P99 are the latencies of the successful requests started in
	// the spans (nearest rank).
	P50, P99 time.Duration
	// Completed counts the successful requests that ended in the spans:
	// what the server got done there, whenever the client asked.
	Completed int
	// Length is the spans' total duration.
	Length time.Duration
}

// PerSecond is the throughput in the spans: successful requests ended per
// second, 0 when the spans are empty.
func (w windowStats) PerSecond() float64 {
	if w.Length <= 0 {
		return 0
	}
	return float64(w.Completed) / w.Length.Seconds()
}

// measure summarizes samples, sorted by start as loadgen returns them, in
// spans, which must not overlap.
func measure(samples loadgen.Samples, spans []span) windowStats {
	var w windowStats
	var lat []time.Duration
	for _, sp := range spans {
		w.Length += sp.dur()
		for _, s := range samples.Between(sp.From, sp.To) {
			w.Requests++
			if s.Err != "" {
				w.Failed++
				continue
			}
			lat = append(lat, s.Latency)
		}
	}
	for _, s := range samples {
		if s.Err != "" {
			continue
		}
		end := s.Start.Add(s.Latency)
		for _, sp := range spans {
			if sp.has(end) {
				w.Completed++
				break
			}
		}
	}
	w.P50, w.P99 = percentile(lat, 50), percentile(lat, 99)
	return w
}

// percentile is the nearest-rank p-th percentile of d (which it sorts): the
// smallest value that at least p% of d do not exceed; 0 for none.
func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	rank := (p*len(d) + 99) / 100 // ceil(p/100 × n), 1-based
	if rank < 1 {
		rank = 1
	}
	return d[rank-1]
}

// steadySpans are the parts of a run without a reload: from the end of the
// warm-up to the first reload, and from settle after each reload's end to
// the next reload's start (or to the end of the load). A span that the
// settling leaves empty is left out.
func steadySpans(load span, warmup, settle time.Duration, reloads []span) []span {
	var out []span
	from := load.From.Add(warmup)
	for _, r := range reloads {
		if r.From.After(from) {
			out = append(out, span{from, r.From})
		}
		if end := r.To.Add(settle); end.After(from) {
			from = end
		}
	}
	if load.To.After(from) {
		out = append(out, span{from, load.To})
	}
	return out
}

// rangeOf is "lo–hi" of vs, each formatted by f, or one value when they
// are all the same; "-" for none.
func rangeOf(vs []float64, f func(float64) string) string {
	if len(vs) == 0 {
		return "-"
	}
	lo, hi := vs[0], vs[0]
	for _, v := range vs[1:] {
		lo, hi = min(lo, v), max(hi, v)
	}
	if f(lo) == f(hi) {
		return f(lo)
	}
	return f(lo) + "–" + f(hi)
}

func fmtInt(v float64) string { return fmt.Sprintf("%.0f", math.Round(v)+0) } // +0: no "-0"

func fmtRatio(v float64) string { return fmt.Sprintf("%.2f", v) }
