//go:build linux

package host

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
)

// spawner starts every worker from one OS thread that lives as long as the
// master, and executes the master's new image from it in an in-place
// upgrade. Linux sends a child's parent-death signal when the *thread*
// that forked it exits, not the process; Go may retire threads, and an
// exec ends every thread but the one that calls it, so all forks and the
// exec must come from one thread that never ends. That is the process's
// main thread when the program hands it over (ServeMainThread): after an
// exec the thread that called it is the new image's main thread, so the
// workers of every image keep one parent thread. A program that does not
// (tests, the demo) gets a locked thread of its own for each Host.
type spawner struct {
	reqs   chan spawnReq
	shared bool // the main thread's: never closed
}

type spawnReq struct {
	argv0 string
	argv  []string
	attr  *syscall.ProcAttr
	// exec, if set, replaces the process image from this thread instead
	// of forking: see Host.Exec.
	exec  func() error
	reply chan spawnRes
}

type spawnRes struct {
	pid int
	err error
}

// mainThread is the spawner ServeMainThread serves.
var mainThread = struct {
	spawner
	served atomic.Bool
}{spawner: spawner{reqs: make(chan spawnReq), shared: true}}

// ServeMainThread makes the calling goroutine, which must be the main
// goroutine locked to the process's main thread (runtime.LockOSThread in
// an init function of package main), the thread every Host of the process
// forks from and executes on. It never returns: run the program in
// another goroutine, which ends the process with os.Exit.
func ServeMainThread() {
	mainThread.served.Store(true)
	serveSpawns(mainThread.reqs)
	select {}
}

func serveSpawns(reqs <-chan spawnReq) {
	for r := range reqs {
		if r.exec != nil {
			r.reply <- spawnRes{err: r.exec()}
			continue
		}
		pid, err := syscall.ForkExec(r.argv0, r.argv, r.attr)
		r.reply <- spawnRes{pid, err}
	}
}

func newSpawner() *spawner {
	if mainThread.served.Load() {
		return &mainThread.spawner
	}
	s := &spawner{reqs: make(chan spawnReq)}
	go func() {
		runtime.LockOSThread()
		// Unlock before returning: a goroutine that exits locked takes its
		// thread down with it, which would signal any child still alive.
		defer runtime.UnlockOSThread()
		serveSpawns(s.reqs)
	}()
	return s
}

func (s *spawner) start(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error) {
	reply := make(chan spawnRes)
	s.reqs <- spawnReq{argv0: argv0, argv: argv, attr: attr, reply: reply}
	r := <-reply
	return r.pid, r.err
}

// run runs f on the spawner's thread.
func (s *spawner) run(f func() error) error {
	reply := make(chan spawnRes)
	s.reqs <- spawnReq{exec: f, reply: reply}
	return (<-reply).err
}

func (s *spawner) close() {
	if !s.shared {
		close(s.reqs)
	}
}

// resolveCommand finds the worker program the way a shell would, anew each
// time, so a binary replaced on disk (or a symlink swapped) is what runs.
func resolveCommand(name, dir string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		path := name
		if !filepath.IsAbs(path) && dir != "" {
			path = filepath.Join(dir, path)
		}
		if err := executable(path); err != nil {
			return "", fmt.Errorf("worker command %s: %w", name, err)
		}
		return path, nil
	}
	for _, kv := range env {
		if p, ok := strings.CutPrefix(kv, "PATH="); ok {
			for _, d := range filepath.SplitList(p) {
				if d == "" {
					d = "."
				}
				path := filepath.Join(d, name)
				if !filepath.IsAbs(path) && dir != "" {
					path = filepath.Join(dir, path)
				}
				if executable(path) == nil {
					return path, nil
				}
			}
		}
	}
	return "", fmt.Errorf("worker command %s: %w", name, exec.ErrNotFound)
}

func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return pe.Err
		}
		return err
	}
	if fi.IsDir() {
		return errors.New("is a directory")
	}
	if fi.Mode()&0o111 == 0 {
		return errors.New("permission denied (not executable)")
	}
	return nil
}
