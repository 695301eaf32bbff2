package listener_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/baton-sh/baton/listener"
	"github.com/baton-sh/baton/notify"
)

// TestListenFallback checks the program started without baton: nothing is
// passed, and Listen binds the address itself.
func TestListenFallback(t *testing.T) {
	l, err := listener.Listen("web", "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if a := l.Addr().(*net.TCPAddr); !a.IP.IsLoopback() || a.Port == 0 {
		t.Errorf("fallback listener on %s, want 127.0.0.1 and a port", a)
	}
	pc, err := listener.ListenPacket("dns", "udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if a := pc.LocalAddr().(*net.UDPAddr); !a.IP.IsLoopback() || a.Port == 0 {
		t.Errorf("fallback packet conn on %s, want 127.0.0.1 and a port", a)
	}
}

// pickEnv makes the test binary act as the worker of TestListenPicks.
const pickEnv = "BATON_LISTENER_TEST_PICK"

// TestListenPicks passes three sockets the way systemd does when a .socket
// unit has two ListenStream= lines and no FileDescriptorName= (both named
// after the unit), plus one named socket, and checks that a worker asking
// concurrently by name and address gets each one exactly once.
func TestListenPicks(t *testing.T) {
	if os.Getenv(pickEnv) != "" {
		pickWorker()
		return
	}
	var files []*os.File
	var addrs []string
	for i := 0; i < 3; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := l.(*net.TCPListener).File()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
		addrs = append(addrs, f.Name()[len("tcp:"):])
	}
	// File names are "tcp:ADDR->": keep ADDR.
	for i, a := range addrs {
		addrs[i] = strings.TrimSuffix(a, "->")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestListenPicks$")
	cmd.Env = append(os.Environ(), pickEnv+"=1",
		"LISTEN_FDS=3", "LISTEN_FDNAMES=app.socket:app.socket:web",
		"PICK_A="+addrs[0], "PICK_B="+addrs[1], "PICK_WEB="+addrs[2])
	cmd.ExtraFiles = files
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("worker: %v\n%s", err, out)
	}
	want := fmt.Sprintf("a=%s b=%s web=%s", addrs[0], addrs[1], addrs[2])
	if !strings.Contains(string(out), want) {
		t.Errorf("worker got %q, want %q", out, want)
	}
}

func pickWorker() {
	// LISTEN_PID names the process the sockets are for: this one.
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	asks := []struct{ key, name, addr string }{
		{"b", "app.socket", os.Getenv("PICK_B")},
		{"a", "app.socket", os.Getenv("PICK_A")},
		// By address alone: no socket is named "http".
		{"web", "http", os.Getenv("PICK_WEB")},
	}
	got := make([]string, len(asks))
	var wg sync.WaitGroup
	for i, a := range asks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := listener.Listen(a.name, "tcp", a.addr)
			if err != nil {
				got[i] = "error: " + err.Error()
				return
			}
			got[i] = l.Addr().String()
		}()
	}
	wg.Wait()
	fmt.Printf("a=%s b=%s web=%s\n", got[1], got[0], got[2])
	// Nothing left: a fourth ask is an error naming what was passed, not
	// a socket of its own that no client would reach.
	if l, err := listener.Listen("app.socket", "tcp", "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "passed: app.socket, app.socket, web") {
		fmt.Printf("fourth Listen: %v %v\n", l, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Ready waits out a full queue at the manager (a flood of other messages,
// or a manager busy for a moment) instead of failing the worker's start.
func TestReadyWaitsOutAFullQueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	filled := 0
	for ; filled < 100000; filled++ {
		if err := notify.SendTo(path, "STATUS=flood"); errors.Is(err, notify.ErrQueueFull) {
			break
		}
	}
	if filled == 100000 {
		t.Fatal("the queue never filled")
	}
	done := make(chan error, 1)
	go func() { done <- listener.Ready() }()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if string(buf[:n]) == "READY=1" {
			break
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Ready: %v", err)
	}
}
