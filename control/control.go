// Package control is the master's control socket: a unix stream socket,
// mode 0600, on which `baton reload` and `baton status` talk to a running
// master. Each connection carries one JSON request and one JSON answer.
//
// A reload request with Wait is answered when the reload that covers it has
// ended: the new generation is ready and the old one has drained, or the
// reload failed and the old generation keeps serving. Callers that ask
// during a reload share the one reload queued behind it.
package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/baton-sh/baton/internal/sockets"
	"github.com/baton-sh/baton/upgrader"
)

// Master is what the control socket steers; *upgrader.Master is one.
type Master interface {
	Reload() <-chan upgrader.Result
	Status() (upgrader.Status, error)
}

// Request is what a client sends.
type Request struct {
	Command string `json:"command"` // "reload" or "status"
	Wait    bool   `json:"wait,omitempty"`
}

// Response is what the master answers.
type Response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Generation serves after the reload (with Wait).
	Generation  int              `json:"generation,omitempty"`
	TookSeconds float64          `json:"took_seconds,omitempty"`
	Status      *upgrader.Status `json:"status,omitempty"`
}

// DefaultPath is the control socket next to a pidfile: app.pid gives
// app.control.sock.
func DefaultPath(pidfile string) string {
	return strings.TrimSuffix(pidfile, ".pid") + ".control.sock"
}

// Server answers requests on a control socket.
type Server struct {
	sock *sockets.Socket
	l    net.Listener
}

// Listen binds the control socket at path with mode 0600. A stale socket
// file is replaced; one a running master answers on is an error.
func Listen(path string) (*Server, error) {
	sock, err := sockets.Bind(sockets.Spec{Name: "control", Network: "unix", Address: path, Mode: 0o600})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	l, err := net.FileListener(sock.File)
	if err != nil {
		sock.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return &Server{sock: sock, l: l}, nil
}

// Path is where the socket is.
func (s *Server) Path() string { return s.sock.Spec.Address }

// Serve answers requests for m until Close.
func (s *Server) Serve(m Master) error {
	for {
		c, err := s.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go serveConn(c, m)
	}
}

// Close stops serving and removes the socket file if it is still ours.
func (s *Server) Close() error {
	s.l.Close()
	return s.sock.Close()
}

func serveConn(c net.Conn, m Master) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req Request
	if err := json.NewDecoder(c).Decode(&req); err != nil {
		json.NewEncoder(c).Encode(Response{Error: "bad request: " + err.Error()})
		return
	}
	json.NewEncoder(c).Encode(answer(req, m))
}

func answer(req Request, m Master) Response {
	switch req.Command {
	case "reload":
		done := m.Reload()
		if !req.Wait {
			return Response{OK: true}
		}
		r := <-done
		resp := Response{OK: r.Err == nil, Generation: r.Generation, TookSeconds: r.Took.Seconds()}
		if r.Err != nil {
			resp.Error = r.Err.Error()
		}
		return resp
	case "status":
		st, err := m.Status()
		if err != nil {
			return Response{Error: err.Error()}
		}
		return Response{OK: true, Status: &st}
	}
	return Response{Error: fmt.Sprintf("unknown command %q", req.Command)}
}

// Ask sends req to the master at path and returns its answer, giving up
// after timeout (0: no limit).
func Ask(path string, req Request, timeout time.Duration) (Response, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return Response{}, fmt.Errorf("cannot reach the master on %s (is baton running with this --control or --pidfile?): %w", path, errors.Unwrap(err))
	}
	defer c.Close()
	if timeout > 0 {
		c.SetDeadline(time.Now().Add(timeout))
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return Response{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return Response{}, fmt.Errorf("no answer from the master within %s (a reload may still be under way)", timeout)
		}
		return Response{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	return resp, nil
}
