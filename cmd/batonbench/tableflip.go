package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// tableflipServer is a self-upgrading tableflip server.
type tableflipServer struct {
	childServer
	pidFile string
}

func (t *tableflipServer) start() error {
	return t.startServing(exec.Command(t.cfg.tableflip, "-addr", t.addr, "-pidfile", t.pidFile))
}

func (t *tableflipServer) reload() error {
	old := t.main
	if err := syscall.Kill(old.pid, syscall.SIGHUP); err != nil {
		return err
	}
	// The new process writes its PID once ready; the old one then drains
	// and exits, and its orphaned successor becomes our child.
	deadline := time.Now().Add(t.cfg.stepTimeout)
	var pid int
	if !poll(t.cfg.stepTimeout, func() bool {
		b, _ := os.ReadFile(t.pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return pid > 0 && pid != old.pid
	}) {
		return fmt.Errorf("no new tableflip process within %s", t.cfg.stepTimeout)
	}
	select {
	case <-old.done:
	case <-time.After(time.Until(deadline)):
		return fmt.Errorf("old tableflip process %d still running after %s", old.pid, t.cfg.stepTimeout)
	}
	t.main = adopt(pid)
	return nil
}
