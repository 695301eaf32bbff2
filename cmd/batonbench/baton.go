package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"syscall"
	"time"
)

// batonServer is the test worker under a baton master.
type batonServer struct {
	cfg    Config
	addr   string
	logw   io.Writer
	master *batonProc
}

func (b *batonServer) start() error {
	m, err := startBaton(b.cfg, b.logw, "--listen", "http=tcp://"+b.addr, "--", b.cfg.worker)
	if err != nil {
		return err
	}
	b.master = m
	_, err = m.next(isReloadComplete)
	return err
}

func (b *batonServer) reload() error {
	if err := b.master.hup(); err != nil {
		return err
	}
	_, err := b.master.next(isReloadComplete)
	return err
}

func (b *batonServer) servicePID() int { return b.master.cmd.Process.Pid }
func (b *batonServer) holderPID() int  { return b.master.cmd.Process.Pid }

func (b *batonServer) stop() error {
	if b.master == nil {
		return nil
	}
	return b.master.stop()
}

// batonProc is a baton master that batonbench started, its JSON log read
// into events.
type batonProc struct {
	cmd     *exec.Cmd
	timeout time.Duration
	events  chan event
	exited  chan error // receives cmd.Wait's result once, when the log ends
}

// event is one line of baton's JSON log.
type event struct {
	Event string // the step, unlike the message never reworded
	Gen   int
	PID   int
	Error string
	Time  time.Time
}

func isReloadComplete(e event) bool { return e.Event == "reload_complete" }

// startBaton runs cfg.baton with args, in JSON, and follows its log; what
// is not JSON (a worker's output) goes to logw.
func startBaton(cfg Config, logw io.Writer, args ...string) (*batonProc, error) {
	cmd := exec.Command(cfg.baton, append([]string{"--log-format", "json"}, args...)...)
	cmd.Env = workerEnv()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b := &batonProc{cmd: cmd, timeout: cfg.stepTimeout, events: make(chan event, 256), exited: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var e event
			if json.Unmarshal(sc.Bytes(), &e) != nil {
				fmt.Fprintf(logw, "baton: %s\n", sc.Bytes())
				continue
			}
			b.events <- e
		}
		b.exited <- cmd.Wait()
	}()
	return b, nil
}

// next waits for an event that match accepts. A failed reload, baton's
// exit or no such event within the step timeout is an error.
func (b *batonProc) next(match func(event) bool) (event, error) {
	timeout := time.After(b.timeout)
	for {
		select {
		case e := <-b.events:
			if e.Event == "reload_failed" || e.Event == "rolled_back" {
				return e, fmt.Errorf("%s: %s", e.Event, e.Error)
			}
			if match(e) {
				return e, nil
			}
		case err := <-b.exited:
			b.exited <- err // for stop
			return event{}, fmt.Errorf("baton exited: %v", err)
		case <-timeout:
			return event{}, fmt.Errorf("no such event within %s", b.timeout)
		}
	}
}

// hup asks baton for a reload.
func (b *batonProc) hup() error { return b.cmd.Process.Signal(syscall.SIGHUP) }

// stop sends TERM and waits for baton to exit, SIGKILLing it after the
// step timeout; it returns how baton exited.
func (b *batonProc) stop() error {
	b.cmd.Process.Signal(syscall.SIGTERM)
	timeout := time.After(b.timeout)
	for {
		select {
		case <-b.events: // unread, they would hold the log reader up
		case err := <-b.exited:
			return err
		case <-timeout:
			b.cmd.Process.Kill()
			return fmt.Errorf("baton still running %s after TERM", b.timeout)
		}
	}
}
