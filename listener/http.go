package listener

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// NewConnGrace is how long a drain waits for a connection that was
// accepted but has not sent its request yet. It matches the 5 seconds after
// which net/http's own Shutdown gives up on such a connection.
const NewConnGrace = 5 * time.Second

// ServeHTTP runs srv on l until one of drainSignals arrives (SIGTERM, baton's
// default drain signal, when none are given), then drains it the way a
// handoff needs, and returns nil once nothing is left in flight:
//
//  1. Ready is sent as soon as srv is about to accept, so baton can drain
//     the previous generation.
//  2. On the drain signal, l is closed: this process stops accepting, but
//     the socket stays open in baton and in the next generation, so no
//     connection is refused; connections waiting in the kernel's queue go
//     to the next generation.
//  3. Keep-alives are turned off: idle keep-alive connections are closed
//     (clients retry an idempotent request on a closed idle connection), and
//     every response still to be written carries "Connection: close".
//  4. Every connection already accepted is served to completion, including
//     one whose request arrives only now (up to NewConnGrace).
//     srv.Shutdown alone would close such a connection without answering:
//     net/http drops any request it reads after Shutdown has begun, and a
//     client cannot safely retry the first request on a new connection.
//  5. srv.Shutdown then closes what is left, all of it idle.
//
// There is no timeout of its own: baton's --drain-timeout bounds the drain.
// ServeHTTP sets srv.ConnState, calling any hook already there. Without
// baton it is simply a server that stops gracefully on SIGTERM.
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
		srv.Close()
		return err
	}
	select {
	case err := <-served:
		return err
	case <-sigc:
	}
	// Keep-alives go off before l closes (Drain repeats it): once this
	// process stops accepting, no response may invite a client to reuse
	// its connection.
	srv.SetKeepAlivesEnabled(false)
	l.Close()
	Stopping() // only now: baton may take it to mean "no longer accepting"
	<-served   // the accept loop has ended: no connection is added after this
	return drainer.Drain(context.Background())
}

// HTTPDrainer shuts an http.Server down without losing a request, for
// servers whose listener something else closes (a tableflip app's
// Upgrader.Stop, say); ServeHTTP uses one. http.Server.Shutdown alone
// closes, unanswered, a connection it accepted whose request it reads
// after the shutdown began, and a client cannot safely retry the first
// request of a new connection.
type HTTPDrainer struct {
	srv   *http.Server
	conns *connTracker
}

// NewHTTPDrainer prepares srv; call it before srv.Serve. It sets
// srv.ConnState, calling any hook already there.
func NewHTTPDrainer(srv *http.Server) *HTTPDrainer {
	return &HTTPDrainer{srv: srv, conns: trackConns(srv)}
}

// Drain finishes srv's work once its listeners are closed and Serve has
// returned: it turns keep-alives off (idle connections close; responses
// still to be written carry "Connection: close"), waits until every
// accepted connection has sent and been answered its request (a new one
// for up to NewConnGrace), then calls srv.Shutdown(ctx), which closes
// what is left, all of it idle. It returns ctx's error if ctx ends first.
func (d *HTTPDrainer) Drain(ctx context.Context) error {
	d.srv.SetKeepAlivesEnabled(false)
	if err := d.conns.waitQuiet(ctx); err != nil {
		return err
	}
	return d.srv.Shutdown(ctx)
}

// connTracker follows srv's connections through their states, so a drain
// can wait for the ones that may still carry a request.
type connTracker struct {
	mu      sync.Mutex
	conns   map[net.Conn]connState
	changed chan struct{} // one pending wake-up for waitQuiet
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

// waitQuiet returns once no connection is active and none is new for less
// than NewConnGrace, or ctx is done. It waits on connection state changes,
// and on a timer only for the grace of the youngest new connection.
func (t *connTracker) waitQuiet(ctx context.Context) error {
	for {
		busy, graceEnds := t.busy()
		if !busy && graceEnds.IsZero() {
			return nil
		}
		timer := time.NewTimer(time.Until(graceEnds))
		if busy {
			timer.Stop() // an active connection: only its state change matters
		}
		select {
		case <-t.changed:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		}
		timer.Stop()
	}
}

// busy reports whether a connection is serving a request, and when the
// grace of the latest new connection ends (zero if none is in grace).
func (t *connTracker) busy() (active bool, graceEnds time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	for _, c := range t.conns {
		switch c.state {
		case http.StateActive:
			active = true
		case http.StateNew:
			if end := c.since.Add(NewConnGrace); end.After(now) && end.After(graceEnds) {
				graceEnds = end
			}
		}
	}
	return active, graceEnds
}
