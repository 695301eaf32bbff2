// Package admin is baton's optional HTTP admin endpoint: health and
// readiness probes, Prometheus metrics, and, only when enabled, a reload
// endpoint (the same opt-in as Prometheus' --web.enable-lifecycle).
//
//	GET  /-/healthy  200 while the master runs
//	GET  /-/ready    200 while a generation serves, 503 otherwise
//	GET  /metrics    Prometheus text format
//	POST /-/reload   reload and answer when it has ended (with Lifecycle)
//	POST /-/quit     begin a graceful stop, as TERM does (with Lifecycle)
//	POST /-/upgrade  upgrade baton in place; answers with the versions just before the exec (with Lifecycle)
//	POST /-/scale?workers=N  scale and answer once N workers serve (with Lifecycle)
//
// No client can hold the master's file descriptors or memory: at most
// MaxConns connections are open at once (fewer under a low open-file
// limit); one more closes the connection idle longest, or waits in the
// kernel's queue while every one is busy; and every connection ends
// within the timeouts below unless it is busy with requests.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/internal/sockets"
	"github.com/baton-sh/baton/upgrader"
)

// Limits of the admin endpoint.
const (
	// MaxConns is the most connections open at once. Under an open-file
	// limit below 4*MaxConns it is a quarter of that limit, so that a
	// flood of connections leaves the master descriptors for its workers
	// and its control socket. One more closes the connection idle
	// longest, or waits while every one is busy with a request.
	MaxConns = 64
	// ReadHeaderTimeout is how long a new connection, or a request, may
	// take to send its headers.
	ReadHeaderTimeout = 5 * time.Second
	// ReadTimeout is how long a whole request may take to arrive.
	ReadTimeout = 10 * time.Second
	// WriteTimeout is how long an answer may take to be written, counted
	// from the end of its request's headers. POST /-/reload is the
	// exception: it waits for the reload to end, which the master's ready
	// and drain timeouts bound, and has WriteTimeout for writing after
	// that.
	WriteTimeout = 10 * time.Second
	// IdleTimeout closes a keep-alive connection that has had no request
	// for this long.
	IdleTimeout = 30 * time.Second
	// MaxHeaderBytes bounds a request's headers; the endpoint's requests
	// carry a few hundred bytes.
	MaxHeaderBytes = 8 << 10
)

// limits are the endpoint's timeouts and connection cap; tests shorten
// them.
type limits struct {
	maxConns                      int
	readHeader, read, write, idle time.Duration
}

func defaultLimits() limits {
	return limits{maxConns: connCap(), readHeader: ReadHeaderTimeout, read: ReadTimeout, write: WriteTimeout, idle: IdleTimeout}
}

// connCap is MaxConns, or a quarter of a lower open-file limit.
func connCap() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur >= 4*MaxConns {
		return MaxConns
	}
	return max(int(rl.Cur/4), 1)
}

// Server is the admin HTTP endpoint.
type Server struct {
	srv *http.Server
	l   net.Listener
	raw net.Listener // the listener under the connection cap
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
	return listen(addr, master, metrics, lifecycle, defaultLimits())
}

// Adopt serves the endpoint, in the master's new image after an in-place
// upgrade, on the listening socket handed over as descriptor fd.
func Adopt(fd int, master Master, metrics *Metrics, lifecycle bool) (*Server, error) {
	f := os.NewFile(uintptr(fd), "admin")
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("admin endpoint handed over as fd %d: %w", fd, err)
	}
	return newServer(l, master, metrics, lifecycle, defaultLimits()), nil
}

// Carry is a descriptor of the endpoint's listening socket for the
// master's new image in an in-place upgrade: a duplicate, close-on-exec,
// which the caller keeps open until the exec and closes should it not
// happen. The endpoint is left as it was (see sockets.Dup).
func (s *Server) Carry() (int, error) {
	c, ok := s.raw.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("a %T has no descriptor", s.raw)
	}
	return sockets.Dup(c)
}

func listen(addr string, master Master, metrics *Metrics, lifecycle bool, lim limits) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin endpoint %s: %w", addr, err)
	}
	return newServer(l, master, metrics, lifecycle, lim), nil
}

func newServer(l net.Listener, master Master, metrics *Metrics, lifecycle bool, lim limits) *Server {
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
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("POST /-/reload", func(w http.ResponseWriter, r *http.Request) {
		if !lifecycle {
			http.Error(w, "reload over HTTP is disabled: start baton with --admin-lifecycle to enable it", http.StatusForbidden)
			return
		}
		res, ok := await(w, r, master.Reload(upgrader.TriggerAdmin), lim.write)
		if !ok {
			return // the client is gone; the reload goes on
		}
		answer(w, res)
	})
	mux.HandleFunc("POST /-/scale", func(w http.ResponseWriter, r *http.Request) {
		if !lifecycle {
			http.Error(w, "scale over HTTP is disabled: start baton with --admin-lifecycle to enable it", http.StatusForbidden)
			return
		}
		// One count, from 1 to MaxWorkers: a repeated one is ambiguous,
		// and a huge one would start processes until the master ran out.
		q := r.URL.Query()["workers"]
		n, err := 0, errors.New("no count")
		if len(q) == 1 {
			n, err = strconv.Atoi(q[0])
		}
		if err != nil || upgrader.CheckWorkers(n) != nil {
			http.Error(w, fmt.Sprintf("want ?workers=N once, with N from 1 to %d", upgrader.MaxWorkers), http.StatusBadRequest)
			return
		}
		res, ok := await(w, r, master.Scale(n), lim.write)
		if !ok {
			return
		}
		answer(w, res)
	})
	mux.HandleFunc("POST /-/upgrade", func(w http.ResponseWriter, r *http.Request) {
		if !lifecycle {
			http.Error(w, "upgrade over HTTP is disabled: start baton with --admin-lifecycle to enable it", http.StatusForbidden)
			return
		}
		var res upgrader.UpgradeResult
		select {
		case res = <-master.Upgrade():
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		resp := control.Response{OK: res.Err == nil, From: res.From, To: res.To}
		if res.Err != nil {
			resp.Error = res.Err.Error()
			w.WriteHeader(http.StatusInternalServerError)
		}
		json.NewEncoder(w).Encode(resp)
		// The master execs its new image once this answer has left.
		http.NewResponseController(w).Flush()
		if res.Sent != nil {
			res.Sent()
		}
		if res.Failed != nil {
			<-res.Failed // the connection ends with the exec
		}
	})
	mux.HandleFunc("POST /-/quit", func(w http.ResponseWriter, r *http.Request) {
		if !lifecycle {
			http.Error(w, "quit over HTTP is disabled: start baton with --admin-lifecycle to enable it", http.StatusForbidden)
			return
		}
		master.Stop()
		fmt.Fprintln(w, "baton is stopping")
	})
	cl := newConnLimiter(l, lim.maxConns)
	srv := &http.Server{
		Handler:           mux,
		ConnState:         cl.connState,
		ReadHeaderTimeout: lim.readHeader,
		ReadTimeout:       lim.read,
		WriteTimeout:      lim.write,
		IdleTimeout:       lim.idle,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
	return &Server{srv: srv, l: cl, raw: l}
}

// await waits for a reload or scale to end, however long that takes, and
// gives writing the answer write from then on:
// WriteTimeout, counted from the request, would cut it. (Nothing is
// written while waiting, and net/http lifts the read deadline while a
// handler runs, so neither deadline ends the wait.) It reports false if
// the client went away first.
func await(w http.ResponseWriter, r *http.Request, done <-chan upgrader.Result, write time.Duration) (upgrader.Result, bool) {
	select {
	case res := <-done:
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(write))
		return res, true
	case <-r.Context().Done():
		return upgrader.Result{}, false
	}
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

// connLimiter keeps at most max connections open. When every slot is
// taken, the connection that has been idle longest (no request under way:
// waiting for its first, or kept alive after one), once idle for at least
// evictAfter, is closed to make room for the next, so that idle or silent
// connections, from a client that leaks them or from a flood, cannot keep
// a probe out for long. While every connection is busy with a request,
// Accept waits for one to end or go idle; newcomers wait in the kernel's
// queue meanwhile, costing the master nothing.
type connLimiter struct {
	net.Listener
	max    int
	mu     sync.Mutex
	conns  map[*limitedConn]struct{}
	room   chan struct{} // a connection closed or went idle
	closed chan struct{}
	once   sync.Once
}

func newConnLimiter(l net.Listener, max int) *connLimiter {
	return &connLimiter{Listener: l, max: max, conns: map[*limitedConn]struct{}{},
		room: make(chan struct{}, 1), closed: make(chan struct{})}
}

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		room, idlest, wait := l.makeRoom()
		if room {
			break
		}
		if idlest != nil {
			idlest.Close()
			continue
		}
		var timer *time.Timer
		var timeout <-chan time.Time
		if wait > 0 {
			timer = time.NewTimer(wait)
			timeout = timer.C
		}
		select {
		case <-l.room:
		case <-timeout:
		case <-l.closed:
			return nil, net.ErrClosed
		}
		if timer != nil {
			timer.Stop()
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	lc := &limitedConn{Conn: c, l: l, idleSince: time.Now()}
	l.mu.Lock()
	l.conns[lc] = struct{}{}
	l.mu.Unlock()
	return lc, nil
}

// evictAfter is how long a connection must have been idle before it is
// closed to make room: one just accepted has time to be read.
const evictAfter = 100 * time.Millisecond

// makeRoom reports whether a slot is free; if not, the connection to
// close to free one, or else how long to wait before looking again (0:
// until a connection closes or goes idle).
func (l *connLimiter) makeRoom() (room bool, idlest *limitedConn, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) < l.max {
		return true, nil, 0
	}
	for c := range l.conns {
		if !c.busy && (idlest == nil || c.idleSince.Before(idlest.idleSince)) {
			idlest = c
		}
	}
	if idlest == nil {
		return false, nil, 0
	}
	if idle := time.Since(idlest.idleSince); idle < evictAfter {
		return false, nil, evictAfter - idle
	}
	return false, idlest, 0
}

func (l *connLimiter) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// connState is the http.Server's ConnState hook: it tells which
// connections are busy with a request.
func (l *connLimiter) connState(c net.Conn, state http.ConnState) {
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	lc.busy = state == http.StateActive
	if !lc.busy {
		lc.idleSince = time.Now()
	}
	l.mu.Unlock()
	if !lc.busy {
		l.signalRoom()
	}
}

func (l *connLimiter) signalRoom() {
	select {
	case l.room <- struct{}{}:
	default:
	}
}

// limitedConn is a connection counted by its connLimiter until it is
// closed.
type limitedConn struct {
	net.Conn
	l         *connLimiter
	busy      bool      // a request is under way; guarded by l.mu
	idleSince time.Time // guarded by l.mu
	once      sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		c.l.signalRoom()
	})
	return err
}
