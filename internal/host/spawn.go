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
	"syscall"
)

// spawner starts every worker from one OS thread that lives as long as the
// master. Linux sends a child's parent-death signal when the *thread* that
// forked it exits, not the process; Go may retire threads, so forking from
// a locked, long-lived thread is what makes the signal mean "master died".
type spawner struct {
	reqs chan spawnReq
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

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq)}
	go func() {
		runtime.LockOSThread()
		// Unlock before returning: a goroutine that exits locked takes its
		// thread down with it, which would signal any child still alive.
		defer runtime.UnlockOSThread()
		for r := range s.reqs {
			if r.exec != nil {
				r.reply <- spawnRes{err: r.exec()}
				continue
			}
			pid, err := syscall.ForkExec(r.argv0, r.argv, r.attr)
			r.reply <- spawnRes{pid, err}
		}
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

func (s *spawner) close() { close(s.reqs) }

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
