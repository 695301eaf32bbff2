package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/baton-sh/baton/internal/sockets"
)

// holderServer is the test worker behind a process that holds its socket
// (batonbench hold), restarted there by TERM, wait, start. main is the
// holder.
type holderServer struct {
	childServer
	pid int // the current worker's
}

func (h *holderServer) start() error {
	c, err := startChild(exec.Command(h.cfg.self, "hold", "-addr", h.addr, "--", h.cfg.worker))
	if err != nil {
		return err
	}
	h.main = c
	h.pid, err = waitNewPID(h.addr, 0, h.cfg.stepTimeout)
	return err
}

func (h *holderServer) reload() error {
	if err := syscall.Kill(h.main.pid, syscall.SIGHUP); err != nil {
		return err
	}
	pid, err := waitNewPID(h.addr, h.pid, h.cfg.stepTimeout)
	h.pid = pid
	return err
}

// servicePID is the worker's: the holder stands in for the service
// manager (systemd), which owns the socket; the service is the server.
func (h *holderServer) servicePID() int { return h.pid }
func (h *holderServer) holderPID() int  { return h.main.pid }

// holdCmd is the socket holder: it binds the address once, passes the
// socket to the worker as fd 3 with LISTEN_FDS, and on SIGHUP restarts the
// worker behind it (TERM, wait for it to exit, start a new one), as
// systemd does for a socket-activated service. TERM stops it. The socket
// is bound and described to the worker as baton's master does it, so the
// two differ only in how they restart.
func holdCmd(args []string) int {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "address to bind")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	command := fs.Args()
	if len(command) == 0 {
		fmt.Fprintln(os.Stderr, "batonbench hold: no worker command")
		return 2
	}
	spec, err := sockets.ParseSpec("http=tcp://"+*addr, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "batonbench hold:", err)
		return 2
	}
	sock, err := sockets.Bind(spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "batonbench hold:", err)
		return 1
	}
	env := sockets.WorkerEnv(os.Environ(), []*sockets.Socket{sock}, "")
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)

	start := func() (*exec.Cmd, chan error, error) {
		// LISTEN_PID must be the worker's own PID: a shell learns its PID
		// and execs the worker in place.
		cmd := exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`}, command...)...)
		cmd.Env = env
		cmd.ExtraFiles = []*os.File{sock.File}
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			return nil, nil, err
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		return cmd, done, nil
	}
	cmd, done, err := start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "batonbench hold:", err)
		return 1
	}
	for {
		select {
		case err := <-done:
			fmt.Fprintf(os.Stderr, "batonbench hold: worker exited on its own: %v\n", err)
			return 1
		case s := <-sigs:
			cmd.Process.Signal(syscall.SIGTERM)
			<-done
			if s != syscall.SIGHUP {
				return 0
			}
			if cmd, done, err = start(); err != nil {
				fmt.Fprintln(os.Stderr, "batonbench hold:", err)
				return 1
			}
		}
	}
}
