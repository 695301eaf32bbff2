package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baton-sh/baton/internal/sockets"
)

// childServer is what the modes without baton share: main is the one
// process the mode starts (the server itself, or the socket holder in
// front of it). stop terminates it, and it is the PID a supervisor would
// watch unless the mode says otherwise.
type childServer struct {
	cfg  Config
	addr string
	main *child
}

// startServing starts cmd as main and waits until it answers on addr.
func (c *childServer) startServing(cmd *exec.Cmd) error {
	m, err := startChild(cmd)
	if err != nil {
		return err
	}
	c.main = m
	return waitServes(c.addr, m.pid, c.cfg.stepTimeout)
}

func (c *childServer) servicePID() int { return c.main.pid }
func (c *childServer) holderPID() int  { return 0 }

func (c *childServer) stop() error {
	if c.main == nil {
		return nil
	}
	return c.main.terminate(c.cfg.stepTimeout)
}

// child is a process of ours, started or adopted, waited for by PID.
type child struct {
	pid  int
	done chan struct{}
}

// startChild starts cmd with our output and workerEnv as its environment.
func startChild(cmd *exec.Cmd) (*child, error) {
	cmd.Env = workerEnv()
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	// Waited for by PID below, like the adopted ones.
	cmd.Process.Release()
	return adopt(pid), nil
}

// adopt waits for pid, which must be our child, in the background.
func adopt(pid int) *child {
	c := &child{pid: pid, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			var ws syscall.WaitStatus
			_, err := syscall.Wait4(pid, &ws, 0, nil)
			if !errors.Is(err, syscall.EINTR) {
				return
			}
		}
	}()
	return c
}

func (c *child) terminate(d time.Duration) error {
	syscall.Kill(c.pid, syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-time.After(d):
		syscall.Kill(c.pid, syscall.SIGKILL)
		<-c.done
		return fmt.Errorf("pid %d still running %s after TERM", c.pid, d)
	}
}

// workerEnv is our environment as the master hands it to a worker, with
// no sockets and no notify socket: whatever socket-activation variables
// batonbench itself was started with are dropped, so a server binds its
// own port (and baton its own sockets) unless given one on purpose.
func workerEnv() []string { return sockets.WorkerEnv(os.Environ(), nil, "") }

var probe = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true},
	Timeout:   5 * time.Second,
}

// askPID asks the server on addr for its PID, on a new connection.
func askPID(addr string) (int, error) {
	resp, err := probe.Get("http://" + addr + "/pid")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// waitServes waits until the server answering on addr is pid.
func waitServes(addr string, pid int, d time.Duration) error {
	got, err := waitNewPID(addr, 0, d)
	if err == nil && got != pid {
		err = fmt.Errorf("%s is answered by pid %d, want %d", addr, got, pid)
	}
	return err
}

// waitNewPID waits until addr is answered by a process other than old.
func waitNewPID(addr string, old int, d time.Duration) (int, error) {
	var pid int
	var err error
	if poll(d, func() bool {
		pid, err = askPID(addr)
		return err == nil && pid != old
	}) {
		return pid, nil
	}
	return 0, fmt.Errorf("%s not answered by a new server within %s (last: pid %d, %v)", addr, d, pid, err)
}

// poll calls done every millisecond until it returns true, and reports
// whether it did so within d. done is called at least once, and its last
// call may begin a little after d.
func poll(d time.Duration, done func() bool) bool {
	deadline := time.Now().Add(d)
	for !done() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func setChildSubreaper() error {
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return errno
	}
	return nil
}
