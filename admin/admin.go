// Package admin is baton's optional HTTP admin endpoint: health and
// readiness probes, Prometheus metrics, and, only when enabled, a reload
// endpoint (the same opt-in as Prometheus' --web.enable-lifecycle).
//
//	GET  /-/healthy  200 while the master runs
//	GET  /-/ready    200 while a generation serves, 503 otherwise
//	GET  /metrics    Prometheus text format
//	POST /-/reload   reload and answer when it has ended (with Lifecycle)
//	POST /-/quit     begin a graceful stop, as TERM does (with Lifecycle)
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/baton-sh/baton/control"
)

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
		case err != nil || st.Generation == 0:
			http.Error(w, "baton is not ready: no generation serves", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "baton is ready: generation %d, pid %d\n", st.Generation, st.WorkerPID)
	})
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("POST /-/reload", func(w http.ResponseWriter, r *http.Request) {
		if !lifecycle {
			http.Error(w, "reload over HTTP is disabled: start baton with --admin-lifecycle to enable it", http.StatusForbidden)
			return
		}
		res := <-master.Reload()
		w.Header().Set("Content-Type", "application/json")
		resp := control.Response{OK: res.Err == nil, Generation: res.Generation, TookSeconds: res.Took.Seconds()}
		if res.Err != nil {
			resp.Error = res.Err.Error()
			w.WriteHeader(http.StatusInternalServerError)
		}
		json.NewEncoder(w).Encode(resp)
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
