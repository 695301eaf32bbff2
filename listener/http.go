package listener

import (
	"bufio"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// NewConnGrace is how long a drain waits for a connection that was
// accepted but has not sent its request yet. It matches the 5 seconds after
// which net/http's own Shutdown gives up on such a connection.
const NewConnGrace = 5 * time.Second

// IdleConnGrace is how long a drain waits for the next request on a
// keep-alive connection that is between requests, counted from the start
// of the drain or from its last response, whichever is later. A connection
// that looks idle may have its next request on the way or unread in the
// kernel; closing it at once would lose that request, and a client
// resends neither a POST nor any request it has already written.
const IdleConnGrace = time.Second

// ServeHTTP runs srv on l until one of drainSignals arrives (SIGTERM, baton's
// default drain signal, when none are given), then drains it the way a
// handoff needs, and returns nil once nothing is left in flight:
//
//  1. Ready is sent as soon as srv is about to accept, so baton can drain
//     the previous generation. If it cannot be sent, ServeHTTP says so
//     once, in srv.ErrorLog (or the log package's standard logger, as
//     net/http does), and serves on: the server works, and a manager
//     that needs the message times out on its own (baton's --ready
//     accepting does not need it).
//  2. On the drain signal, l is closed: this process stops accepting, but
//     the socket stays open in baton and in the next generation, so no
//     connection is refused; connections waiting in the kernel's queue go
//     to the next generation.
//  3. Every response still to be written carries "Connection: close", so
//     each connection closes after its next answer.
//  4. Every connection already accepted is served to completion, including
//     one whose request arrives only now: a new one gets NewConnGrace to
//     send it, a keep-alive one between requests IdleConnGrace.
//     srv.Shutdown (or SetKeepAlivesEnabled(false)) alone closes such a
//     connection without answering, and a client resends neither a POST
//     nor the first request of a new connection.
//  5. srv.Shutdown then closes what is left, all of it silent past its
//     grace.
//
// There is no timeout of its own: baton's --drain-timeout bounds the drain.
// ServeHTTP sets srv.ConnState, calling any hook already there, and wraps
// srv.Handler (see NewHTTPDrainer). Without baton it is simply a server
// that stops gracefully on SIGTERM.
func ServeHTTP(srv *http.Server, l net.Listener, drainSignals ...os.Signal) error {
	if len(drainSignals) == 0 {
		drainSignals = []os.Signal{syscall.SIGTERM}
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, drainSignals...)
	defer signal.Stop(sigc)

	drainer := NewHTTPDrainer(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	if err := Ready(); err != nil {
		logf(srv, "listener: serving, but READY=1 was not sent: %v (a manager waiting for it will time out: check NOTIFY_SOCKET, or run baton with --ready accepting)", err)
	}
	select {
	case err := <-served:
		return err
	case <-sigc:
	}
	// Before l closes: once this process stops accepting, no response may
	// invite a client to reuse its connection.
	drainer.begin()
	l.Close()
	Stopping() // only now: baton may take it to mean "no longer accepting"
	<-served   // the accept loop has ended: no connection is added after this
	return drainer.Drain(context.Background())
}

// logf logs where srv logs its own errors.
func logf(srv *http.Server, format string, args ...any) {
	if srv.ErrorLog != nil {
		srv.ErrorLog.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// HTTPDrainer shuts an http.Server down without losing a request, for
// servers whose listener something else closes (a tableflip app's
// Upgrader.Stop, say); ServeHTTP uses one. http.Server.Shutdown alone
// closes, unanswered, a connection it accepted whose request it reads
// after the shutdown began, and a client cannot safely retry the first
// request of a new connection.
type HTTPDrainer struct {
	srv      *http.Server
	conns    *connTracker
	draining atomic.Bool
}

// NewHTTPDrainer prepares srv; call it before srv.Serve. It sets
// srv.ConnState, calling any hook already there, and wraps srv.Handler
// (http.DefaultServeMux when nil) so that, once the drain has begun, every
// response says "Connection: close". Handlers get a ResponseWriter that
// still offers http.Flusher, http.Hijacker and io.ReaderFrom, and Unwrap
// for http.ResponseController.
func NewHTTPDrainer(srv *http.Server) *HTTPDrainer {
	d := &HTTPDrainer{srv: srv, conns: trackConns(srv)}
	next := srv.Handler
	if next == nil {
		next = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dw := &drainWriter{ResponseWriter: w, draining: &d.draining}
		next.ServeHTTP(dw, r)
		dw.header() // a handler that wrote nothing: net/http writes the header now
	})
	return d
}

// Drain finishes srv's work once its listeners are closed and Serve has
// returned: every response still to be written says "Connection: close";
// it waits until every accepted connection has been answered the request
// it is sending, a new one for up to NewConnGrace and one between
// keep-alive requests for up to IdleConnGrace, then calls
// srv.Shutdown(ctx), which closes what is left, all of it silent past its
// grace. It returns ctx's error if ctx ends first.
func (d *HTTPDrainer) Drain(ctx context.Context) error {
	d.begin()
	if err := d.conns.waitQuiet(ctx); err != nil {
		return err
	}
	return d.srv.Shutdown(ctx)
}

// begin starts the drain: responses from now on close their connection.
// Unlike srv.SetKeepAlivesEnabled(false), it closes no connection.
func (d *HTTPDrainer) begin() {
	if !d.draining.Swap(true) {
		d.conns.beginDrain()
	}
}

// drainWriter adds "Connection: close" to a response whose header is
// written once the drain has begun. One handler goroutine uses it.
type drainWriter struct {
	http.ResponseWriter
	draining *atomic.Bool
	decided  bool // the header has been decided
}

func (w *drainWriter) header() {
	if !w.decided {
		w.decided = true
		if w.draining.Load() {
			w.ResponseWriter.Header().Set("Connection", "close")
		}
	}
}

func (w *drainWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.header() // not for other 1xx: the final header follows
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *drainWriter) Write(b []byte) (int, error) {
	w.header()
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps net/http's sendfile path for io.Copy.
func (w *drainWriter) ReadFrom(r io.Reader) (int64, error) {
	w.header()
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(w.ResponseWriter, r)
}

func (w *drainWriter) Flush() {
	w.header()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *drainWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h, ok := w.ResponseWriter.(http.Hijacker); ok {
		return h.Hijack()
	}
	return nil, nil, http.ErrNotSupported
}

// Unwrap gives http.ResponseController the ResponseWriter underneath.
func (w *drainWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// connTracker follows srv's connections through their states, so a drain
// can wait for the ones that may still carry a request.
type connTracker struct {
	mu         sync.Mutex
	conns      map[net.Conn]connState
	drainStart time.Time     // zero until the drain begins
	changed    chan struct{} // one pending wake-up for waitQuiet
}

type connState struct {
	state http.ConnState
	since time.Time
}

func trackConns(srv *http.Server) *connTracker {
	t := &connTracker{conns: map[net.Conn]connState{}, changed: make(chan struct{}, 1)}
	next := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		t.mu.Lock()
		switch s {
		case http.StateClosed, http.StateHijacked:
			delete(t.conns, c)
		default:
			t.conns[c] = connState{s, time.Now()}
		}
		t.mu.Unlock()
		select {
		case t.changed <- struct{}{}:
		default:
		}
		if next != nil {
			next(c, s)
		}
	}
	return t
}

func (t *connTracker) beginDrain() {
	t.mu.Lock()
	t.drainStart = time.Now()
	t.mu.Unlock()
}

// waitQuiet returns once every connection is closed or idle, or ctx is
// done. Meanwhile it closes each connection that stays silent past its
// grace: a new one NewConnGrace after it was accepted, an idle one
// IdleConnGrace after the drain began or after its last response,
// whichever is later. It waits on connection state changes, and on a
// timer only for the next grace to end.
func (t *connTracker) waitQuiet(ctx context.Context) error {
	for {
		active, next, expired := t.sweep()
		for _, c := range expired {
			c.Close() // what srv.Shutdown would do to it
		}
		if !active && next.IsZero() {
			return nil
		}
		var timer *time.Timer
		var graceEnds <-chan time.Time
		if !next.IsZero() {
			timer = time.NewTimer(time.Until(next))
			graceEnds = timer.C
		}
		select {
		case <-t.changed:
		case <-graceEnds:
		case <-ctx.Done():
		}
		if timer != nil {
			timer.Stop()
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// sweep reports whether a connection is serving a request, when the
// next grace of a new or idle connection ends (zero if none is in grace),
// and the connections whose grace has ended.
func (t *connTracker) sweep() (active bool, next time.Time, expired []net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	for conn, c := range t.conns {
		var end time.Time
		switch c.state {
		case http.StateActive:
			active = true
			continue
		case http.StateNew:
			end = c.since.Add(NewConnGrace)
		case http.StateIdle:
			from := c.since
			if from.Before(t.drainStart) {
				from = t.drainStart
			}
			end = from.Add(IdleConnGrace)
		default:
			continue
		}
		if !end.After(now) {
			expired = append(expired, conn)
		} else if next.IsZero() || end.Before(next) {
			next = end
		}
	}
	return active, next, expired
}
