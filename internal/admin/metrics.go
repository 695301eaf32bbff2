package admin

import (
	"bytes"
	"io"
	"net/http"
	runtimemetrics "runtime/metrics"
	"strings"
	"sync"

	"github.com/VictoriaMetrics/metrics"

	"github.com/baton-sh/baton/upgrader"
)

// Metrics are the master's metrics, fed by Observe and served in
// Prometheus' text format: baton's own (baton_*), each with its HELP text
// and TYPE, and the Go runtime's and the process's (go_*, process_*), as
// github.com/VictoriaMetrics/metrics writes them, with a TYPE and an empty
// HELP, plus the three of the Prometheus Go collector's that it lacks
// (go_gc_gogc_percent, go_gc_gomemlimit_bytes,
// go_sched_gomaxprocs_threads).
type Metrics struct {
	set            *metrics.Set
	reloadDuration *metrics.PrometheusHistogram
	restarts       *metrics.Counter

	mu       sync.Mutex
	logDrops *metrics.Counter // set from dropped at each scrape
	dropped  func() uint64
}

// help is the HELP text of each of baton's metric families.
var help = map[string]string{
	"baton_reloads_total":                         "Reloads and worker replacements, by what triggered them and how they ended (ok, failed or rolled_back).",
	"baton_reload_duration_seconds":               "Time from a reload request until the old generation is gone, or the reload failed.",
	"baton_worker_restarts_total":                 "Workers restarted after they died outside a reload.",
	"baton_generation":                            "The generation now serving (0 while none serves).",
	"baton_worker_up":                             "1 while a ready worker serves, else 0.",
	"baton_workers":                               "Worker processes by state: starting (not yet its slot's server), serving, draining, killed (sent SIGKILL, not yet reaped).",
	"baton_draining_generations":                  "Generations with a worker still draining (killed ones not counted, as --max-draining counts).",
	"baton_last_reload_success_timestamp_seconds": "When the last reload or replacement that succeeded ended (Unix time), 0 before any.",
	"baton_stopping":                              "1 while the master stops and is in this phase: delay (--stop-delay: still serving, not ready) or drain.",
	"baton_log_lines_dropped_total":               "Log lines dropped because the log's reader did not keep up or was gone.",
	"go_gc_gogc_percent":                          "The garbage collector's GOGC percentage: baton's own setting, or the GOGC variable.",
	"go_gc_gomemlimit_bytes":                      "The Go runtime's soft memory limit (GOMEMLIMIT), math.MaxInt64 when none is set.",
	"go_sched_gomaxprocs_threads":                 "GOMAXPROCS: how many threads may run Go code at once.",
}

// runtimeGauges are the Go runtime's metrics served under the names the
// Prometheus Go collector gave them, which the library does not write.
var runtimeGauges = map[string]string{
	"go_gc_gogc_percent":          "/gc/gogc:percent",
	"go_gc_gomemlimit_bytes":      "/gc/gomemlimit:bytes",
	"go_sched_gomaxprocs_threads": "/sched/gomaxprocs:threads",
}

// reloadBuckets are baton_reload_duration_seconds' upper bounds.
var reloadBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// NewMetrics makes baton's metrics. The gauges read status, the master's
// Status, at each scrape. Every counter is served from the start, at 0.
func NewMetrics(status func() (upgrader.Status, error)) *Metrics {
	// The library writes HELP and TYPE lines only when asked to, for the
	// whole process: this binary serves one set of metrics, the master's.
	metrics.ExposeMetadata(true)
	s := metrics.NewSet()
	m := &Metrics{
		set:            s,
		reloadDuration: s.NewPrometheusHistogramExt("baton_reload_duration_seconds", reloadBuckets),
		restarts:       s.NewCounter("baton_worker_restarts_total"),
	}
	// The series a scrape should see before the first reload.
	for _, t := range []upgrader.Trigger{upgrader.TriggerSignal, upgrader.TriggerControl, upgrader.TriggerAdmin} {
		for _, result := range []string{"ok", "failed", "rolled_back"} {
			m.reloads(t, result)
		}
	}
	s.NewGauge("baton_generation", func() float64 {
		st, _ := status()
		return float64(st.Generation)
	})
	s.NewGauge("baton_worker_up", func() float64 {
		if st, err := status(); err == nil && st.Ready && !st.Stopping {
			return 1
		}
		return 0
	})
	for _, state := range []string{"starting", "serving", "draining", "killed"} {
		s.NewGauge(`baton_workers{state="`+state+`"}`, func() float64 {
			st, _ := status()
			n := 0
			for _, w := range st.Workers {
				if workerState(w) == state {
					n++
				}
			}
			return float64(n)
		})
	}
	s.NewGauge("baton_draining_generations", func() float64 {
		st, _ := status()
		gens := map[int]bool{}
		for _, w := range st.Workers {
			if workerState(w) == "draining" {
				gens[w.Generation] = true
			}
		}
		return float64(len(gens))
	})
	s.NewGauge("baton_last_reload_success_timestamp_seconds", func() float64 {
		if st, err := status(); err == nil && st.LastSuccess != nil {
			return float64(st.LastSuccess.UnixNano()) / 1e9
		}
		return 0
	})
	for name, key := range runtimeGauges {
		s.NewGauge(name, func() float64 {
			sample := []runtimemetrics.Sample{{Name: key}}
			runtimemetrics.Read(sample)
			if sample[0].Value.Kind() != runtimemetrics.KindUint64 {
				return 0
			}
			return float64(sample[0].Value.Uint64())
		})
	}
	for _, phase := range []string{"delay", "drain"} {
		s.NewGauge(`baton_stopping{phase="`+phase+`"}`, func() float64 {
			if st, err := status(); err == nil && st.StopPhase == phase {
				return 1
			}
			return 0
		})
	}
	return m
}

// CountLogDrops exports dropped, the number of log lines baton has lost
// to a log reader that did not keep up, as baton_log_lines_dropped_total.
// Call it once.
func (m *Metrics) CountLogDrops(dropped func() uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.logDrops == nil {
		m.logDrops = m.set.NewCounter("baton_log_lines_dropped_total")
	}
	m.dropped = dropped
}

// Observe counts reloads and restarts from a master's events; it is an
// upgrader.Options.OnEvent and does not block.
func (m *Metrics) Observe(e upgrader.Event) {
	switch e.Kind {
	case upgrader.ReloadStarted:
		if e.Trigger == upgrader.TriggerCrash {
			m.restarts.Inc()
		}
	case upgrader.ReloadComplete, upgrader.ReloadFailed, upgrader.RolledBack:
		result := "ok"
		switch e.Kind {
		case upgrader.ReloadFailed:
			result = "failed"
		case upgrader.RolledBack:
			result = "rolled_back"
		}
		m.reloads(e.Trigger, result).Inc()
		switch e.Trigger {
		case upgrader.TriggerSignal, upgrader.TriggerControl, upgrader.TriggerAdmin:
			m.reloadDuration.Update(e.Took.Seconds())
		}
	}
}

// reloads is the counter of reloads of trigger t that ended with result.
func (m *Metrics) reloads(t upgrader.Trigger, result string) *metrics.Counter {
	return m.set.GetOrCreateCounter(`baton_reloads_total{result="` + result + `",trigger="` + t.String() + `"}`)
}

// WritePrometheus writes every metric in Prometheus' text format
// (version 0.0.4).
func (m *Metrics) WritePrometheus(w io.Writer) {
	m.mu.Lock()
	if m.dropped != nil {
		m.logDrops.Set(m.dropped())
	}
	m.mu.Unlock()
	var b bytes.Buffer
	m.set.WritePrometheus(&b)
	metrics.WriteProcessMetrics(&b)
	metrics.WriteFDMetrics(&b)
	// The library writes an empty HELP for each family; some of ours have
	// text. One pass, no copy of the whole: a scrape's garbage is what
	// keeps the master's heap above its idle size.
	out := b.Bytes()
	for len(out) > 0 {
		line := out
		if i := bytes.IndexByte(out, '\n'); i >= 0 {
			line = out[:i+1]
		}
		out = out[len(line):]
		if name, ok := bytes.CutPrefix(line, []byte("# HELP ")); ok {
			if text, ok := help[string(bytes.TrimSuffix(name, []byte("\n")))]; ok {
				io.WriteString(w, strings.TrimSuffix(string(line), "\n")+" "+text+"\n")
				continue
			}
		}
		w.Write(line)
	}
}

// ServeHTTP answers a scrape.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	m.WritePrometheus(w)
}

// Carry is what the counters have counted, for the master's new image in
// an in-place upgrade; Resume sets them there. (The reload-duration
// histogram starts afresh.)
func (m *Metrics) Carry() map[string]uint64 {
	out := map[string]uint64{}
	for _, name := range m.set.ListMetricNames() {
		if strings.HasPrefix(name, "baton_reloads_total{") || name == "baton_worker_restarts_total" {
			out[name] = m.set.GetOrCreateCounter(name).Get()
		}
	}
	return out
}

// Resume sets the counters to what the old image had counted.
func (m *Metrics) Resume(counts map[string]uint64) {
	for name, v := range counts {
		if strings.HasPrefix(name, "baton_reloads_total{") || name == "baton_worker_restarts_total" {
			m.set.GetOrCreateCounter(name).Set(v)
		}
	}
}

// workerState is w's state as the metrics count it: a worker sent
// SIGKILL and not yet reaped is killed, no longer draining.
func workerState(w upgrader.WorkerStatus) string {
	if w.Killed {
		return "killed"
	}
	return w.State
}
