// Package admin is baton's optional HTTP admin endpoint: health and
// readiness probes, Prometheus metrics, and, only when enabled, a reload
// endpoint (the same opt-in as Prometheus' --web.enable-lifecycle).
//
//	GET  /-/healthy  200 while the master runs
//	GET  /-/ready    200 while a generation serves, 503 otherwise
//	GET  /metrics    Prometheus text format
//	POST /-/reload   reload and answer when it has ended (with Lifecycle)
//	POST /-/quit     begin a graceful stop, as TERM does (with Lifecycle)
//	POST /-/scale?workers=N  scale and answer once N workers serve (with Lifecycle)
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/upgrader"
)

// Metrics are the master's Prometheus metrics, fed by Observe.
type Metrics struct {
	registry       *prometheus.Registry
	reloads        *prometheus.CounterVec
	reloadDuration prometheus.Histogram
	restarts       prometheus.Counter
}

// NewMetrics registers baton's metrics, plus the Go and process collectors,
// in a registry of their own. The gauges read status, the master's Status,
// at each scrape.
func NewMetrics(status func() (upgrader.Status, error)) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_reloads_total",
			Help: "Reloads and worker replacements, by what triggered them and how they ended (ok, failed or rolled_back).",
		}, []string{"trigger", "result"}),
		reloadDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "baton_reload_duration_seconds",
			Help:    "Time from a reload request until the old generation is gone, or the reload failed.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_worker_restarts_total",
			Help: "Workers restarted after they died outside a reload.",
		}),
	}
	generation := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "baton_generation",
		Help: "The generation now serving (0 while none serves).",
	}, func() float64 {
		st, _ := status()
		return float64(st.Generation)
	})
	workerUp := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "baton_worker_up",
		Help: "1 while a ready worker serves, else 0.",
	}, func() float64 {
		if st, err := status(); err == nil && st.Ready && !st.Stopping {
			return 1
		}
		return 0
	})
	stopping := func(phase string) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "baton_stopping",
			Help:        "1 while the master stops and is in this phase: delay (--stop-delay: still serving, not ready) or drain.",
			ConstLabels: prometheus.Labels{"phase": phase},
		}, func() float64 {
			if st, err := status(); err == nil && st.StopPhase == phase {
				return 1
			}
			return 0
		})
	}
	// The series a scrape should see before the first reload.
	for _, t := range []upgrader.Trigger{upgrader.TriggerSignal, upgrader.TriggerControl, upgrader.TriggerAdmin} {
		for _, result := range []string{"ok", "failed", "rolled_back"} {
			m.reloads.WithLabelValues(t.String(), result)
		}
	}
	m.registry.MustRegister(m.reloads, m.reloadDuration, m.restarts, generation, workerUp, stopping("delay"), stopping("drain"),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// CountLogDrops exports dropped, the number of log lines baton has lost
// to a log reader that did not keep up, as baton_log_lines_dropped_total.
func (m *Metrics) CountLogDrops(dropped func() uint64) {
	m.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "baton_log_lines_dropped_total",
		Help: "Log lines dropped because the log's reader did not keep up or was gone.",
	}, func() float64 { return float64(dropped()) }))
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
		m.reloads.WithLabelValues(e.Trigger.String(), result).Inc()
		switch e.Trigger {
		case upgrader.TriggerSignal, upgrader.TriggerControl, upgrader.TriggerAdmin:
			m.reloadDuration.Observe(e.Took.Seconds())
		}
	}
}

// Server is the admin HTTP endpoint.
type Server struct {
	srv *http.Server
	l   net.Listener
}

// Master is what the admin endpoint steers; *upgrader.Master is one.
type Master interface {
	control.Master
	// Stop begins a graceful stop and returns at once.
	Stop()
}

// Listen binds the admin endpoint on addr (host:port; keep it on loopback
// or a private network). With lifecycle, POST /-/reload and POST /-/quit
// are enabled.
func Listen(addr string, master Master, metrics *Metrics, lifecycle bool) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin endpoint %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "baton is healthy")
	})
	mux.HandleFunc("GET /-/ready", func(w http.ResponseWriter, r *http.Request) {
		st, err := master.Status()
		switch {
		case err == nil && st.Stopping:
			http.Error(w, "baton is not ready: stopping", http.StatusServiceUnavailable)
			return
		case err != nil || !st.Ready:
			http.Error(w, "baton is not ready: no worker serves", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "baton is ready: generation %d, pid %d\n", st.Generation, st.WorkerPID)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /-/reload", func(w http.ResponseWriter, r *http.Request) {
		if !lifecycle {
			http.Error(w, "reload over HTTP is disabled: start baton with --admin-lifecycle to enable it", http.StatusForbidden)
			return
		}
		answer(w, <-master.Reload(upgrader.TriggerAdmin))
	})
	mux.HandleFunc("POST /-/scale", func(w http.ResponseWriter, r *http.Request) {
		if !lifecycle {
			http.Error(w, "scale over HTTP is disabled: start baton with --admin-lifecycle to enable it", http.StatusForbidden)
			return
		}
		n, err := strconv.Atoi(r.URL.Query().Get("workers"))
		if err != nil || n < 1 {
			http.Error(w, "want ?workers=N with N at least 1", http.StatusBadRequest)
			return
		}
		answer(w, <-master.Scale(n))
	})
	mux.HandleFunc("POST /-/quit", func(w http.ResponseWriter, r *http.Request) {
		if !lifecycle {
			http.Error(w, "quit over HTTP is disabled: start baton with --admin-lifecycle to enable it", http.StatusForbidden)
			return
		}
		master.Stop()
		fmt.Fprintln(w, "baton is stopping")
	})
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, l: l}
	return s, nil
}

// answer writes res as the JSON the control socket answers with; 500 when
// it failed.
func answer(w http.ResponseWriter, res upgrader.Result) {
	w.Header().Set("Content-Type", "application/json")
	if res.Err != nil {
		w.WriteHeader(http.StatusInternalServerError)
	}
	json.NewEncoder(w).Encode(control.ResultResponse(res))
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// Serve serves until Close.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops the endpoint, letting requests in flight finish for up to 5s.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
