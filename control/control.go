// Package control is the master's control socket: a unix stream socket,
// mode 0600, on which `baton reload` and `baton status` talk to a running
// master. Each connection carries one JSON request and one JSON answer.
// With the Group option (--control-group) it is mode 0660 and belongs to
// that group, whose members may then make the requests it answers.
//
// A reload request with Wait is answered when the reload that covers it has
// ended: the new generation is ready and the old one has drained, or the
// reload failed and the old generation keeps serving. Callers that ask
// during a reload share the one reload queued behind it.
//
// Neither side can hang the other or exhaust it:
//   - A request is at most MaxRequest bytes and must arrive within
//     RequestTimeout; anything else is refused with a short error.
//   - While a reload is awaited, the master writes a newline (which JSON
//     skips) every KeepAlive, so Ask tells a master that is working from
//     one that is gone, stopped or wedged: it gives up after Silence
//     without a byte. A master that dies closes the connection, which Ask
//     reports at once.
//   - The server never stops accepting while the socket is open: accept
//     errors (out of file descriptors, say) are logged once and retried
//     with backoff, as net/http does.
//
// The client half (DefaultPath, Ask, AskUpgrade, Request, Response) is for
// any program that drives a running master, such as a deploy tool. The
// server half is baton's own; Adopt and Server.Carry, which take this
// module's internal socket type, exist for baton's in-place upgrade.
package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/baton-sh/baton/internal/fdlimit"
	"github.com/baton-sh/baton/internal/sockets"
	"github.com/baton-sh/baton/upgrader"
)

// Limits of the protocol.
const (
	// MaxRequest is the largest request the master reads; requests are a
	// few dozen bytes.
	MaxRequest = 4 << 10
	// RequestTimeout is how long a connection may take to send its
	// request: idle connections cannot pile up and eat the master's file
	// descriptors.
	RequestTimeout = 5 * time.Second
	// KeepAlive is how often the master writes a newline while a reload
	// is awaited.
	KeepAlive = time.Second
	// Silence is how long Ask waits for a byte from a master before it
	// takes it for stopped or wedged.
	Silence = 10 * KeepAlive
)

// Master is what the control socket steers; *upgrader.Master is one.
type Master interface {
	Reload(why upgrader.Trigger) <-chan upgrader.Result
	Scale(n int) <-chan upgrader.Result
	Upgrade() <-chan upgrader.UpgradeResult
	Status() (upgrader.Status, error)
}

// Request is what a client sends.
type Request struct {
	Command string `json:"command"` // "reload", "scale" or "status"
	Wait    bool   `json:"wait,omitempty"`
	// Workers is the worker count asked for (scale).
	Workers int `json:"workers,omitempty"`
}

// Response is what the master answers.
type Response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Generation serves after the reload (with Wait).
	Generation int `json:"generation,omitempty"`
	// Result is ok, failed or rolled_back (with Wait).
	Result string `json:"result,omitempty"`
	// From and To are the versions of an upgrade about to exec.
	From        string           `json:"from,omitempty"`
	To          string           `json:"to,omitempty"`
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
	sock   *sockets.Socket
	l      net.Listener
	log    zerolog.Logger
	closed chan struct{}
}

// Option changes how Listen makes the control socket.
type Option func(*options)

type options struct {
	group bool
	gid   int
}

// Group gives the control socket to group gid with mode 0660, so that
// its members may connect; by default it is mode 0600, for baton's own
// user (and root) only. The group gains the requests the socket answers
// (reload and status), and nothing else of baton's user.
func Group(gid int) Option {
	return func(o *options) { o.group, o.gid = true, gid }
}

// Listen binds the control socket at path with mode 0600 (see Group). A
// stale socket file is replaced; one a running master answers on is an
// error. Accept errors are logged on log.
func Listen(path string, log zerolog.Logger, opts ...Option) (*Server, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if err := sockets.CheckUnixPath(path); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	sock, err := sockets.Bind(sockets.Spec{Name: "control", Network: "unix", Address: path, Mode: 0o600})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if o.group {
		// The group comes first, the mode after: the socket never opens
		// to any group but this one.
		err := os.Lchown(path, -1, o.gid)
		if err == nil {
			err = os.Chmod(path, 0o660)
		}
		if err != nil {
			sock.Close()
			if errors.Is(err, fs.ErrPermission) {
				err = fmt.Errorf("%w (baton must run as root, or as a member of the group)", err)
			}
			return nil, fmt.Errorf("control socket %s: give it to group %d: %w", path, o.gid, err)
		}
	}
	l, err := net.FileListener(sock.File)
	if err != nil {
		sock.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, fdlimit.Explain(err))
	}
	return &Server{sock: sock, l: l, log: log, closed: make(chan struct{})}, nil
}

// Serve answers requests for m until Close.
func (s *Server) Serve(m Master) error {
	var delay time.Duration
	failures := 0
	for {
		c, err := s.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Whatever failed (no file descriptor left, no memory, a
			// connection aborted before it was accepted) may pass; giving
			// up would leave every later client waiting on a socket that
			// nobody serves.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			if failures == 0 {
				s.log.Warn().Str("event", "control_accept_failed").Err(fdlimit.Explain(err)).Msg("control socket: cannot accept a connection: retrying")
			}
			failures++
			select {
			case <-time.After(delay):
			case <-s.closed:
				return nil
			}
			continue
		}
		if failures > 0 {
			s.log.Info().Str("event", "control_accepting").Int("failures", failures).Msg("control socket: accepting again")
			delay, failures = 0, 0
		}
		go serveConn(c, m)
	}
}

// Carry describes the control socket for the master's new image in an
// in-place upgrade; its descriptor stays open across the exec.
func (s *Server) Carry() sockets.Carried { return s.sock.Carry() }

// Adopt takes back, in the new image, the control socket at path handed
// over as c.
func Adopt(path string, c sockets.Carried, log zerolog.Logger) (*Server, error) {
	sock, err := sockets.Adopt(sockets.Spec{Name: "control", Network: "unix", Address: path}, c)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	l, err := net.FileListener(sock.File)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return &Server{sock: sock, l: l, log: log, closed: make(chan struct{})}, nil
}

// Close stops serving and removes the socket file if it is still ours.
func (s *Server) Close() error {
	close(s.closed)
	s.l.Close()
	return s.sock.Close()
}

func serveConn(c net.Conn, m Master) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(RequestTimeout))
	req, err := readRequest(c)
	if err != nil {
		reply(c, Response{Error: err.Error()})
		return
	}
	c.SetReadDeadline(time.Time{})
	if req.Command == "upgrade" {
		answerUpgrade(m, c)
		return
	}
	reply(c, answer(req, m, c))
}

// answerUpgrade asks m for an in-place upgrade and answers with its first
// word: a refusal, or the versions of an exec about to happen, which ends
// this connection. The client waits for the new image with Status.
func answerUpgrade(m Master, c net.Conn) {
	done := m.Upgrade()
	var r upgrader.UpgradeResult
	for waiting := true; waiting; {
		c.SetWriteDeadline(time.Now().Add(KeepAlive))
		if _, err := c.Write([]byte{'\n'}); err != nil {
			return
		}
		select {
		case r = <-done:
			waiting = false
		case <-time.After(KeepAlive):
		}
	}
	if r.Err != nil {
		reply(c, Response{Error: r.Err.Error(), From: r.From})
		return
	}
	reply(c, Response{OK: true, From: r.From, To: r.To})
	if r.Sent != nil {
		r.Sent()
	}
	// The connection ends with the exec: that is how the client knows it
	// happened. Closed before, it would say the exec failed.
	if r.Failed != nil {
		<-r.Failed
	}
}

// readRequest reads one JSON request, a line of at most MaxRequest bytes.
func readRequest(c net.Conn) (Request, error) {
	var req Request
	line, err := bufio.NewReaderSize(io.LimitReader(c, MaxRequest+1), MaxRequest).ReadSlice('\n')
	switch {
	case len(line) > MaxRequest || errors.Is(err, bufio.ErrBufferFull):
		return req, fmt.Errorf("bad request: longer than %d bytes", MaxRequest)
	case err != nil && !errors.Is(err, io.EOF):
		return req, fmt.Errorf("bad request: %v", err)
	}
	if err := json.Unmarshal(line, &req); err != nil {
		return req, fmt.Errorf("bad request: %v", err)
	}
	return req, nil
}

func reply(c net.Conn, resp Response) {
	c.SetWriteDeadline(time.Now().Add(RequestTimeout))
	json.NewEncoder(c).Encode(resp)
}

func answer(req Request, m Master, c net.Conn) Response {
	switch req.Command {
	case "reload", "scale":
		var done <-chan upgrader.Result
		if req.Command == "reload" {
			done = m.Reload(upgrader.TriggerControl)
		} else {
			done = m.Scale(req.Workers)
		}
		if !req.Wait {
			return Response{OK: true}
		}
		r, ok := await(done, c)
		if !ok {
			return Response{Error: "the client stopped listening"}
		}
		return ResultResponse(r)
	case "status":
		st, err := m.Status()
		if err != nil {
			return Response{Error: err.Error()}
		}
		return Response{OK: true, Status: &st}
	}
	return Response{Error: fmt.Sprintf("unknown command %.40q: want reload, scale, upgrade or status", req.Command)}
}

// ResultResponse is the answer that reports r.
func ResultResponse(r upgrader.Result) Response {
	resp := Response{OK: r.Err == nil, Generation: r.Generation, TookSeconds: r.Took.Seconds(), Result: r.Outcome()}
	if r.Err != nil {
		resp.Error = r.Err.Error()
	}
	return resp
}

// await waits for a reload's result, writing a newline at once and then
// every KeepAlive. It gives up when the client is gone; the reload goes
// on regardless.
func await(done <-chan upgrader.Result, c net.Conn) (upgrader.Result, bool) {
	tick := time.NewTicker(KeepAlive)
	defer tick.Stop()
	for {
		c.SetWriteDeadline(time.Now().Add(KeepAlive))
		if _, err := c.Write([]byte{'\n'}); err != nil {
			return upgrader.Result{}, false
		}
		select {
		case r := <-done:
			return r, true
		case <-tick.C:
		}
	}
}

// PermissionHint is what to do about a master that will not let this
// user in.
const PermissionHint = "run as the user baton runs as, or give baton --control-group with a group of yours"

// Ask sends req to the master at path and returns its answer, giving up
// after timeout (0: no limit) or, while a reload is awaited, after Silence
// without a sign of life from the master. It returns the PID of the
// process that listens on path, as the kernel reports it (0 if unknown).
func Ask(path string, req Request, timeout time.Duration) (Response, int, error) {
	return ask(path, req, timeout, false)
}

// AskUpgrade asks for an in-place upgrade (Command "upgrade") and, when
// the master agrees, waits until timeout at most for the connection to
// end, which it does when the master executes its new image. Its new
// image answers on the same socket once it serves.
func AskUpgrade(path string, timeout time.Duration) (Response, int, error) {
	return ask(path, Request{Command: "upgrade"}, timeout, true)
}

func ask(path string, req Request, timeout time.Duration, untilClosed bool) (Response, int, error) {
	if err := sockets.CheckUnixPath(path); err != nil {
		return Response{}, 0, fmt.Errorf("control socket: %w", err)
	}
	d := net.Dialer{Timeout: RequestTimeout}
	conn, err := d.Dial("unix", path)
	switch {
	case errors.Is(err, fs.ErrPermission):
		return Response{}, 0, fmt.Errorf("no permission to use the control socket %s: %s", path, PermissionHint)
	case err != nil:
		return Response{}, 0, fmt.Errorf("cannot reach the master on %s (is baton running with this --control or --pidfile?): %w", path, errors.Unwrap(err))
	}
	c := conn.(*net.UnixConn)
	defer c.Close()
	pid := peerPID(c)
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	c.SetWriteDeadline(time.Now().Add(RequestTimeout))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return Response{}, pid, fmt.Errorf("control socket %s: %w", path, err)
	}
	// Whatever the request, a master that says nothing for Silence is
	// stopped or stuck: a --wait reload hears a keep-alive every second,
	// and every other answer comes at once.
	r := &liveReader{c: c, deadline: deadline, silence: Silence}
	r.arm()
	var resp Response
	if err := json.NewDecoder(r).Decode(&resp); err != nil {
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout() && r.silent:
			return Response{}, pid, fmt.Errorf("the master (pid %d) has not answered for %s: it is stopped or stuck; the reload may still happen (see baton status)", pid, Silence)
		case errors.As(err, &ne) && ne.Timeout():
			return Response{}, pid, fmt.Errorf("no answer from the master within %s (a reload may still be under way)", timeout)
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
			return Response{}, pid, fmt.Errorf("the master (pid %d) closed the connection without an answer: it has exited or is stopping; check baton status", pid)
		}
		return Response{}, pid, fmt.Errorf("control socket %s: %w", path, err)
	}
	if untilClosed && resp.OK {
		if timeout > 0 {
			c.SetReadDeadline(deadline)
		} else {
			c.SetReadDeadline(time.Time{})
		}
		if _, err := io.Copy(io.Discard, c); err != nil {
			return resp, pid, fmt.Errorf("the master (pid %d) agreed to upgrade but had not executed its new image within %s", pid, timeout)
		}
	}
	return resp, pid, nil
}

// liveReader reads from c, requiring a byte at least every silence (when
// set) and everything before deadline (when set).
type liveReader struct {
	c        net.Conn
	deadline time.Time
	silence  time.Duration
	silent   bool // the last read failed for silence, not the deadline
}

func (r *liveReader) arm() {
	d := r.deadline
	r.silent = false
	if r.silence > 0 {
		if s := time.Now().Add(r.silence); d.IsZero() || s.Before(d) {
			d, r.silent = s, true
		}
	}
	r.c.SetReadDeadline(d)
}

func (r *liveReader) Read(p []byte) (int, error) {
	n, err := r.c.Read(p)
	if n > 0 {
		r.arm()
	}
	return n, err
}

// peerPID is the PID of the process that listens on the other end of c.
func peerPID(c *net.UnixConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var cred *syscall.Ucred
	rc.Control(func(fd uintptr) {
		cred, _ = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if cred == nil {
		return 0
	}
	return int(cred.Pid)
}
