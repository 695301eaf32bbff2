package admin

import (
	"bufio"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/upgrader"
)

// exposition is a scrape, read back: each sample's value by its name with
// labels, and each family's HELP text and TYPE.
type exposition struct {
	samples     map[string]string
	help, types map[string]string
}

func scrape(t *testing.T, m *Metrics) exposition {
	t.Helper()
	rec := httptest.NewRecorder()
	m.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if ct := rec.Header().Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Fatalf("Content-Type %q, want Prometheus' text format", ct)
	}
	e := exposition{samples: map[string]string{}, help: map[string]string{}, types: map[string]string{}}
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# HELP "); ok {
			name, text, _ := strings.Cut(rest, " ")
			e.help[name] = text
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			e.types[name] = typ
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("malformed line %q", line)
		}
		e.samples[line[:i]] = line[i+1:]
	}
	return e
}

func TestMetricsKeepTheirNamesTypesAndHelp(t *testing.T) {
	st := upgrader.Status{Generation: 3, Ready: true}
	m := NewMetrics(func() (upgrader.Status, error) { return st, nil })
	dropped := uint64(0)
	m.CountLogDrops(func() uint64 { return dropped })

	e := scrape(t, m)
	for family, typ := range map[string]string{
		"baton_reloads_total":           "counter",
		"baton_reload_duration_seconds": "histogram",
		"baton_worker_restarts_total":   "counter",
		"baton_generation":              "gauge",
		"baton_worker_up":               "gauge",
		"baton_stopping":                "gauge",
		"baton_log_lines_dropped_total": "counter",
		"go_goroutines":                 "gauge",
		"go_gc_gogc_percent":            "gauge",
		"go_sched_gomaxprocs_threads":   "gauge",
		"process_resident_memory_bytes": "gauge",
		"process_cpu_seconds_total":     "counter",
		"process_open_fds":              "gauge",
	} {
		if e.types[family] != typ {
			t.Errorf("TYPE of %s is %q, want %s", family, e.types[family], typ)
		}
		if strings.HasPrefix(family, "baton_") && e.help[family] != help[family] {
			t.Errorf("HELP of %s is %q, want %q", family, e.help[family], help[family])
		}
	}
	for sample, want := range map[string]string{
		`baton_reloads_total{result="ok",trigger="signal"}`:     "0",
		`baton_reloads_total{result="failed",trigger="signal"}`: "0",
		`baton_reload_duration_seconds_count`:                   "0",
		`baton_worker_restarts_total`:                           "0",
		`baton_generation`:                                      "3",
		`baton_worker_up`:                                       "1",
		`baton_stopping{phase="delay"}`:                         "0",
		`baton_stopping{phase="drain"}`:                         "0",
		`baton_log_lines_dropped_total`:                         "0",
	} {
		if got := e.samples[sample]; got != want {
			t.Errorf("at start %s = %q, want %s", sample, got, want)
		}
	}

	m.Observe(upgrader.Event{Kind: upgrader.ReloadStarted, Trigger: upgrader.TriggerCrash})
	m.Observe(upgrader.Event{Kind: upgrader.ReloadComplete, Trigger: upgrader.TriggerCrash, Took: time.Second})
	m.Observe(upgrader.Event{Kind: upgrader.ReloadComplete, Trigger: upgrader.TriggerSignal, Took: 40 * time.Millisecond})
	m.Observe(upgrader.Event{Kind: upgrader.ReloadFailed, Trigger: upgrader.TriggerSignal, Took: 3 * time.Second})
	dropped = 12
	done := time.Unix(1700000000, 500e6)
	st = upgrader.Status{Generation: 4, Ready: true, Stopping: true, StopPhase: "delay", LastSuccess: &done,
		Workers: []upgrader.WorkerStatus{{Generation: 4, State: "serving"}, {Generation: 4, State: "serving"},
			{Generation: 3, State: "draining"}, {Generation: 2, State: "draining"}, {Generation: 5, State: "starting"},
			{Generation: 1, State: "draining", Killed: true}}}

	e = scrape(t, m)
	for sample, want := range map[string]string{
		`baton_reloads_total{result="ok",trigger="signal"}`:     "1",
		`baton_reloads_total{result="failed",trigger="signal"}`: "1",
		`baton_reloads_total{result="ok",trigger="crash"}`:      "1",
		`baton_reload_duration_seconds_bucket{le="0.025"}`:      "0",
		`baton_reload_duration_seconds_bucket{le="0.05"}`:       "1",
		`baton_reload_duration_seconds_bucket{le="2.5"}`:        "1",
		`baton_reload_duration_seconds_bucket{le="5"}`:          "2",
		`baton_reload_duration_seconds_bucket{le="+Inf"}`:       "2",
		`baton_reload_duration_seconds_count`:                   "2",
		`baton_reload_duration_seconds_sum`:                     "3.04",
		`baton_worker_restarts_total`:                           "1",
		`baton_generation`:                                      "4",
		`baton_worker_up`:                                       "0",
		`baton_stopping{phase="delay"}`:                         "1",
		`baton_stopping{phase="drain"}`:                         "0",
		`baton_log_lines_dropped_total`:                         "12",
		`baton_workers{state="serving"}`:                        "2",
		`baton_workers{state="starting"}`:                       "1",
		`baton_workers{state="draining"}`:                       "2",
		`baton_workers{state="killed"}`:                         "1",
		`baton_draining_generations`:                            "2",
		`baton_last_reload_success_timestamp_seconds`:           "1.7000000005e+09",
	} {
		if got := e.samples[sample]; got != want {
			t.Errorf("after the events %s = %q, want %s", sample, got, want)
		}
	}
}
