package main

import (
	"reflect"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
)

func TestPercentile(t *testing.T) {
	ms := time.Millisecond
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(100-i) * ms // 100 ms down to 1 ms
	}
	tests := []struct {
		name string
		d    []time.Duration
		p    int
		want time.Duration
	}{
		{"none", nil, 50, 0},
		{"one", []time.Duration{7 * ms}, 99, 7 * ms},
		{"one, p0", []time.Duration{7 * ms}, 0, 7 * ms},
		{"two, p50 is the lower", []time.Duration{2 * ms, 1 * ms}, 50, 1 * ms},
		{"two, p51 is the upper", []time.Duration{2 * ms, 1 * ms}, 51, 2 * ms},
		{"three, p50 is the middle", []time.Duration{3 * ms, 1 * ms, 2 * ms}, 50, 2 * ms},
		{"100, p50", hundred, 50, 50 * ms},
		{"100, p99", hundred, 99, 99 * ms},
		{"100, p100", hundred, 100, 100 * ms},
		{"10, p99 is the max", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 99, 10},
	}
	for _, tt := range tests {
		d := append([]time.Duration(nil), tt.d...)
		if got := percentile(d, tt.p); got != tt.want {
			t.Errorf("%s: percentile(p%d) = %v, want %v", tt.name, tt.p, got, tt.want)
		}
	}
}

func TestMeasure(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	sample := func(start, latency int, err string) loadgen.Sample {
		return loadgen.Sample{Start: at(start), Latency: time.Duration(latency) * time.Millisecond, Err: err}
	}
	// Sorted by start, as loadgen returns them.
	samples := loadgen.Samples{
		sample(0, 5, ""),            // ends at 5: before both spans
		sample(90, 20, ""),          // starts before span 1, ends in it
		sample(100, 10, ""),         // in span 1
		sample(150, 100, ""),        // starts in span 1, ends in the gap
		sample(180, 30, "EOF"),      // failed, in span 1
		sample(199, 2, ""),          // starts in span 1, ends in the gap
		sample(200, 1, ""),          // in the gap: span 1 is [100, 200)
		sample(300, 40, ""),         // in span 2
		sample(390, 20, "refused"),  // failed, started in span 2
		sample(395, 100, ""),        // started in span 2, ends after it
		sample(500, 1, ""),          // after both
		sample(1000, 1000, "reset"), // after both
	}
	spans := []span{{at(100), at(200)}, {at(300), at(400)}}
	got := measure(samples, spans)
	// Started in the spans: 100, 150, 180, 199 (the first); 300, 390, 395
	// (the second): 7 requests, 2 of them failed, the others taking 10,
	// 100, 2, 40 and 100 ms. Ended in the spans, and succeeded: at 110 (the
	// two from 90 and 100) and at 340.
	want := windowStats{
		Requests:  7,
		Failed:    2,
		P50:       40 * time.Millisecond,
		P99:       100 * time.Millisecond,
		Completed: 3,
		Length:    200 * time.Millisecond,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("measure = %+v\nwant      %+v", got, want)
	}
	if ps := got.PerSecond(); ps != 15 {
		t.Errorf("PerSecond = %v, want 15 (3 in 200 ms)", ps)
	}

	if got := measure(samples, nil); got != (windowStats{}) || got.PerSecond() != 0 {
		t.Errorf("measure with no spans = %+v, PerSecond %v; want zero", got, got.PerSecond())
	}
	if got := measure(nil, spans); got != (windowStats{Length: 200 * time.Millisecond}) {
		t.Errorf("measure of no samples = %+v", got)
	}
}

func TestSteadySpans(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	sp := func(from, to int) span { return span{at(from), at(to)} }
	ms := time.Millisecond
	tests := []struct {
		name           string
		load           span
		warmup, settle time.Duration
		reloads        []span
		want           []span
	}{
		{"no reloads", sp(0, 1000), 100 * ms, 50 * ms, nil, []span{sp(100, 1000)}},
		{
			"two reloads", sp(0, 3000), 500 * ms, 250 * ms,
			[]span{sp(1000, 1200), sp(2000, 2500)},
			[]span{sp(500, 1000), sp(1450, 2000), sp(2750, 3000)},
		},
		{
			"settling swallows a gap and the end", sp(0, 2000), 0, 500 * ms,
			[]span{sp(1000, 1200), sp(1500, 1600)},
			[]span{sp(0, 1000)},
		},
		{
			"a reload during the warm-up", sp(0, 2000), 500 * ms, 0,
			[]span{sp(100, 200), sp(1000, 1100)},
			[]span{sp(500, 1000), sp(1100, 2000)},
		},
	}
	for _, tt := range tests {
		got := steadySpans(tt.load, tt.warmup, tt.settle, tt.reloads)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: steadySpans = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRangeOf(t *testing.T) {
	tests := []struct {
		vs   []float64
		f    func(float64) string
		want string
	}{
		{nil, fmtInt, "-"},
		{[]float64{3}, fmtInt, "3"},
		{[]float64{3, 1, 2}, fmtInt, "1–3"},
		{[]float64{-0.4, -1}, fmtInt, "-1–0"},
		{[]float64{0.951, 0.949}, fmtRatio, "0.95"},
		{[]float64{0.97, 0.99, 0.9}, fmtRatio, "0.90–0.99"},
		{[]float64{1.5, 42, 130}, fmtMS, "1.50ms–130ms"},
	}
	for _, tt := range tests {
		if got := rangeOf(tt.vs, tt.f); got != tt.want {
			t.Errorf("rangeOf(%v) = %q, want %q", tt.vs, got, tt.want)
		}
	}
}
