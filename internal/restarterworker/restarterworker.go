// Package restarterworker is the HTTP serving and draining that
// cmd/endlessworker and cmd/graceworker share: both stand in for an app
// built on a library that restarts itself (github.com/fvbock/endless,
// github.com/facebookgo/grace), and both libraries drain the same way.
// How each one finds its listener and tells its parent it serves stays in
// its command.
package restarterworker

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"

	"github.com/baton-sh/baton/internal/envnames"
)

// Server answers every request with "LIBRARY gen=N pid=P", N being
// envnames.Generation, so a test learns which library's app and which
// process answered.
type Server struct {
	l    net.Listener
	srv  *http.Server
	open conns
}

// New returns a Server for l that names library in its answers.
func New(library string, l net.Listener) *Server {
	s := &Server{l: l}
	gen := os.Getenv(envnames.Generation)
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s gen=%s pid=%d\n", library, gen, os.Getpid())
	}), ConnState: s.open.track}
	return s
}

// Serve serves until Shutdown closes the listener, and then returns nil;
// it returns any other error at once.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.l); !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// Shutdown is both libraries' drain: keep-alives off (which closes idle
// connections), the listener closed, then a wait until every connection
// that was accepted has ended.
func (s *Server) Shutdown() {
	s.srv.SetKeepAlivesEnabled(false)
	s.l.Close()
	<-s.open.drained()
}

// conns counts a server's open connections, as endless's connection
// WaitGroup and grace's httpdown do, so a drain waits for every one that
// was accepted, including one whose first request is not read yet.
type conns struct {
	mu   sync.Mutex
	n    int
	zero chan struct{}
}

func (c *conns) track(_ net.Conn, s http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch s {
	case http.StateNew:
		c.n++
	case http.StateClosed, http.StateHijacked:
		c.n--
		if c.n == 0 && c.zero != nil {
			close(c.zero)
			c.zero = nil
		}
	}
}

// drained is closed once no connection is open.
func (c *conns) drained() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	done := make(chan struct{})
	if c.n == 0 {
		close(done)
	} else {
		c.zero = done
	}
	return done
}
