package listener_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/listener"
	"github.com/baton-sh/baton/notify"
)

// The tests below send the drain signal to this very process; SIGUSR1
// keeps them clear of the SIGTERM a test runner might use.
const drainSignal = syscall.SIGUSR1

const httpRequest = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"

// connLog records the states the server reports for each connection, by
// the client's address. It is the srv.ConnState hook ServeHTTP must chain.
type connLog struct {
	mu      sync.Mutex
	states  map[string][]http.ConnState
	changed chan struct{}
}

func newConnLog() *connLog {
	return &connLog{states: map[string][]http.ConnState{}, changed: make(chan struct{}, 1)}
}

func (cl *connLog) hook(c net.Conn, s http.ConnState) {
	cl.mu.Lock()
	cl.states[c.RemoteAddr().String()] = append(cl.states[c.RemoteAddr().String()], s)
	cl.mu.Unlock()
	select {
	case cl.changed <- struct{}{}:
	default:
	}
}

func (cl *connLog) seen(client net.Conn, s http.ConnState) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, x := range cl.states[client.LocalAddr().String()] {
		if x == s {
			return true
		}
	}
	return false
}

// waitFor waits until the server has reported state s for the connection
// client dialled.
func (cl *connLog) waitFor(t *testing.T, client net.Conn, s http.ConnState) {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for !cl.seen(client, s) {
		select {
		case <-cl.changed:
		case <-deadline.C:
			t.Fatalf("the server never reported %v for the connection from %s", s, client.LocalAddr())
		}
	}
}

// drainServer is srv run by ServeHTTP in the background.
type drainServer struct {
	addr string
	log  *connLog
	done chan error // ServeHTTP's result
}

// startServeHTTP runs ServeHTTP with NOTIFY_SOCKET set to notifySocket
// (empty: no manager).
func startServeHTTP(t *testing.T, h http.Handler, notifySocket string) *drainServer {
	t.Helper()
	return startServer(t, &http.Server{Handler: h}, notifySocket)
}

// startServer is startServeHTTP for a server of the test's own; it sets
// srv.ConnState.
func startServer(t *testing.T, srv *http.Server, notifySocket string) *drainServer {
	t.Helper()
	t.Setenv("NOTIFY_SOCKET", notifySocket)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &drainServer{addr: l.Addr().String(), log: newConnLog(), done: make(chan error, 1)}
	srv.ConnState = d.log.hook
	go func() { d.done <- listener.ServeHTTP(srv, l, drainSignal) }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			srv.Close()
			select {
			case <-d.done:
			case <-time.After(5 * time.Second):
				t.Error("ServeHTTP still runs after srv.Close")
			}
		}
	})
	return d
}

// dial connects to the server and waits until it has accepted the
// connection, which also proves that ServeHTTP is catching the drain
// signal: it subscribes before it starts to serve.
func (d *drainServer) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", d.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	d.log.waitFor(t, c, http.StateNew)
	return c
}

// drain sends the drain signal and waits until the listener is closed: a
// new connection is refused.
func (d *drainServer) drain(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(os.Getpid(), drainSignal); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", d.addr, time.Second)
		if errors.Is(err, syscall.ECONNREFUSED) {
			return
		}
		// Accepted before the listener closed: let it go at once. A
		// reset (queued when the listener closed) or a timeout leaves
		// the question open for the next dial.
		if err == nil {
			c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("a new connection is still not refused 5s after the drain signal (last dial: %v)", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// running fails the test if ServeHTTP has already returned.
func (d *drainServer) running(t *testing.T, what string) {
	t.Helper()
	select {
	case err := <-d.done:
		d.done <- err
		t.Fatalf("ServeHTTP returned (%v) while %s", err, what)
	default:
	}
}

// wait waits for ServeHTTP to return and checks that it returned nil.
func (d *drainServer) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("ServeHTTP after the drain: %v", err)
		}
		d.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("ServeHTTP did not return after the drain")
	}
}

// readResponse reads one response from br and checks it is a complete 200
// with the given body.
func readResponse(t *testing.T, br *bufio.Reader, body string) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the response body: %v", err)
	}
	if resp.StatusCode != http.StatusOK || string(b) != body {
		t.Fatalf("response %s %q, want 200 %q", resp.Status, b, body)
	}
	return resp
}

// wantClose checks that resp announced the close and that the server did
// close the connection after it.
func wantClose(t *testing.T, resp *http.Response, br *bufio.Reader) {
	t.Helper()
	// An HTTP/1.1 response sets Close exactly when it carries
	// "Connection: close" (ReadResponse removes the header itself).
	if !resp.ProtoAtLeast(1, 1) || !resp.Close {
		t.Errorf("response during the drain is %s without Connection: close", resp.Proto)
	}
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after the response, read gave %d bytes and %v, want EOF: the server should close", n, err)
	}
}

func hello(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }

// TestServeHTTPAcceptedBeforeDrain is the case srv.Shutdown alone gets
// wrong: a connection accepted before the drain whose request only arrives
// after the listener has closed must still be answered.
func TestServeHTTPAcceptedBeforeDrain(t *testing.T) {
	d := startServeHTTP(t, http.HandlerFunc(hello), "")
	c := d.dial(t)

	d.drain(t)
	d.running(t, "an accepted connection has not sent its request yet")

	if _, err := io.WriteString(c, httpRequest); err != nil {
		t.Fatalf("sending the request after the drain began: %v", err)
	}
	br := bufio.NewReader(c)
	resp := readResponse(t, br, "hello")
	wantClose(t, resp, br)
	d.wait(t)
	// The hook set before ServeHTTP keeps being called.
	d.log.waitFor(t, c, http.StateClosed)
}

// TestServeHTTPInFlight checks that a request being handled when the drain
// begins is answered in full before ServeHTTP returns.
func TestServeHTTPInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock()
	d := startServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "slow")
	}), "")
	c := d.dial(t)
	if _, err := io.WriteString(c, httpRequest); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler never ran")
	}

	d.drain(t)
	d.running(t, "a handler is still running")
	unblock()

	br := bufio.NewReader(c)
	resp := readResponse(t, br, "slow")
	wantClose(t, resp, br)
	d.wait(t)
}

// TestServeHTTPKeepAliveDuringDrain is the case closing idle connections
// at once gets wrong: a keep-alive connection between requests when the
// drain begins sends its next request during the drain. It is answered,
// with "Connection: close"; a client would resend neither a POST nor a
// request it had already written.
func TestServeHTTPKeepAliveDuringDrain(t *testing.T) {
	d := startServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The drain's ResponseWriter keeps what net/http's offers.
		_, flusher := w.(http.Flusher)
		_, hijacker := w.(http.Hijacker)
		_, readerFrom := w.(io.ReaderFrom)
		if !flusher || !hijacker || !readerFrom {
			http.Error(w, "ResponseWriter lost an interface", http.StatusInternalServerError)
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Write(body)
	}), "")
	c := d.dial(t)
	post := "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n"
	br := bufio.NewReader(c)
	io.WriteString(c, post+"one")
	if resp := readResponse(t, br, "one"); resp.Close {
		t.Fatal("response before the drain closes the connection; want keep-alive")
	}
	d.log.waitFor(t, c, http.StateIdle)

	d.drain(t)
	d.running(t, "a keep-alive connection is within its grace")
	io.WriteString(c, post+"two")
	wantClose(t, readResponse(t, br, "two"), br)
	d.wait(t)
}

// TestServeHTTPClosesIdle checks that a keep-alive connection idle between
// requests is closed by the drain once it has stayed silent for
// IdleConnGrace, rather than waited for.
func TestServeHTTPClosesIdle(t *testing.T) {
	d := startServeHTTP(t, http.HandlerFunc(hello), "")
	c := d.dial(t)
	if _, err := io.WriteString(c, httpRequest); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if resp := readResponse(t, br, "hello"); resp.Close {
		t.Fatal("response before the drain closes the connection; want keep-alive")
	}
	d.log.waitFor(t, c, http.StateIdle)

	d.drain(t)
	began := time.Now()
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection after the drain: read gave %d bytes and %v, want EOF", n, err)
	}
	if waited := time.Since(began); waited > listener.IdleConnGrace+2*time.Second {
		t.Errorf("idle connection closed %s after the drain began, want about %s", waited, listener.IdleConnGrace)
	}
	d.wait(t)
}

// TestServeHTTPDrainsAll mixes the three kinds of connection a drain
// meets, each on its own: the drain ends only once all are done.
func TestServeHTTPDrainsAll(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock()
	d := startServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		io.WriteString(w, "ok")
	}), "")
	idle := d.dial(t)
	idleR := bufio.NewReader(idle)
	io.WriteString(idle, httpRequest)
	readResponse(t, idleR, "ok")
	d.log.waitFor(t, idle, http.StateIdle)

	slow := d.dial(t)
	io.WriteString(slow, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered

	fresh := d.dial(t)

	d.drain(t)
	if _, err := idleR.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection: %v, want EOF", err)
	}
	d.running(t, "a handler runs and a new connection has not sent its request")

	io.WriteString(fresh, httpRequest)
	freshR := bufio.NewReader(fresh)
	wantClose(t, readResponse(t, freshR, "ok"), freshR)
	d.running(t, "a handler still runs")

	unblock()
	slowR := bufio.NewReader(slow)
	wantClose(t, readResponse(t, slowR, "ok"), slowR)
	d.wait(t)
}

// TestServeHTTPNotifies checks the messages a worker sends its manager:
// READY=1 once it serves, STOPPING=1 when the drain begins.
func TestServeHTTPNotifies(t *testing.T) {
	ns, err := notify.ListenPrivate()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	received := make(chan notify.Datagram, 4)
	go func() {
		for {
			dg, err := ns.Receive()
			if err != nil {
				return
			}
			received <- dg
		}
	}()
	next := func(want string) {
		t.Helper()
		select {
		case dg := <-received:
			if dg.Err != nil || len(dg.Message) != 1 || dg.Message[want] != "1" {
				t.Fatalf("notify message %v (%v), want %s=1", dg.Message, dg.Err, want)
			}
			if dg.PID != os.Getpid() {
				t.Errorf("notify message from pid %d, want %d", dg.PID, os.Getpid())
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no notify message, want %s=1", want)
		}
	}

	d := startServeHTTP(t, http.HandlerFunc(hello), ns.Path())
	next("READY") // also proves ServeHTTP is catching the drain signal
	c := d.dial(t)
	io.WriteString(c, httpRequest)
	br := bufio.NewReader(c)
	readResponse(t, br, "hello")

	d.drain(t)
	next("STOPPING")
	d.wait(t)
	select {
	case dg := <-received:
		t.Errorf("unexpected notify message %v", dg.Message)
	default:
	}
}

// A manager that cannot be told READY=1 is no reason to stop a server
// that already serves: go-systemd leaves the error to its caller, and
// baton's --ready accepting does without the message. ServeHTTP says so
// once, where the server logs its errors, and serves on until the drain.
func TestServeHTTPServesWhenReadyCannotBeSent(t *testing.T) {
	for _, own := range []bool{true, false} {
		name := map[bool]string{true: "srv.ErrorLog", false: "standard logger"}[own]
		t.Run(name, func(t *testing.T) {
			logged := &lockedBuffer{}
			srv := &http.Server{Handler: http.HandlerFunc(hello)}
			if own {
				srv.ErrorLog = log.New(logged, "", 0)
			} else {
				defer log.SetOutput(log.Writer())
				log.SetOutput(logged)
			}
			d := startServer(t, srv, filepath.Join(t.TempDir(), "none.sock"))
			c := d.dial(t)
			io.WriteString(c, httpRequest)
			readResponse(t, bufio.NewReader(c), "hello")
			d.running(t, "serving")
			c.Close() // nothing for the drain to wait for
			d.drain(t)
			d.wait(t) // Ready has returned: whatever it logs is logged
			lines := strings.Split(strings.TrimSpace(logged.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], "READY=1") || !strings.Contains(lines[0], "none.sock") {
				t.Fatalf("logged %q, want one line about READY=1 and none.sock", logged.String())
			}
			t.Log(lines[0])
		})
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestServeHTTPErrors(t *testing.T) {
	t.Run("listener fails", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "")
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		done := make(chan error, 1)
		go func() { done <- listener.ServeHTTP(&http.Server{Handler: http.HandlerFunc(hello)}, l, drainSignal) }()
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("ServeHTTP on a closed listener = %v, want %v", err, net.ErrClosed)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("ServeHTTP on a closed listener did not return")
		}
	})
}

// TestHTTPDrainerContext checks Drain for a server whose listener the
// caller closes: it waits for the request in flight, and gives up with
// ctx's error when ctx ends first.
func TestHTTPDrainerContext(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "late")
	})}
	drainer := listener.NewHTTPDrainer(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer srv.Close()

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, httpRequest)
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler never ran")
	}
	l.Close()
	<-served

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := drainer.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain with a request in flight past ctx's deadline = %v, want %v", err, context.DeadlineExceeded)
	}

	unblock()
	br := bufio.NewReader(c)
	wantClose(t, readResponse(t, br, "late"), br)
	if err := drainer.Drain(context.Background()); err != nil {
		t.Errorf("Drain once the request is answered: %v", err)
	}
}
