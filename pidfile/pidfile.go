// Package pidfile owns the master's pidfile: written atomically, refused
// when a live master holds it, and removed only by the process it names.
package pidfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// HeldError is returned by Write when the pidfile names a running master.
type HeldError struct {
	Path string
	PID  int
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("pidfile %s is held by running baton master pid %d: stop it first (kill -TERM %d) or use another --pidfile", e.Path, e.PID, e.PID)
}

// Read returns the PID recorded in path.
func Read(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pidfile %s does not hold a PID", path)
	}
	return pid, nil
}

// Write records this process's PID in path. The content appears at once
// and whole (temp file in the same directory, then rename), so a reader
// never sees a partial number. A file naming another live process that
// runs the same program as this one is a *HeldError; a file naming a dead
// process, or one a reused PID now gives to some other program, is stale
// and replaced.
func Write(path string) error {
	if pid, err := Read(path); err == nil && pid != os.Getpid() && sameProgramRunning(pid) {
		return &HeldError{Path: path, PID: pid}
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("pidfile %s: cannot write in %s: %w", path, dir, unwrapPath(err))
	}
	defer os.Remove(tmp.Name())
	if _, err := fmt.Fprintf(tmp, "%d\n", os.Getpid()); err != nil {
		tmp.Close()
		return fmt.Errorf("pidfile %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("pidfile %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("pidfile %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("pidfile %s: %w", path, unwrapPath(err))
	}
	return nil
}

// Remove deletes path if it still names this process. A pidfile that a
// newer master has taken over is left alone.
func Remove(path string) error {
	pid, err := Read(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil || pid != os.Getpid() {
		return err
	}
	return os.Remove(path)
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// sameProgramRunning reports whether pid is alive and runs a program with
// the same name as this process, which guards against a PID reused since
// the pidfile was written (after a reboot, typically).
func sameProgramRunning(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	theirs, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return false
	}
	ours, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		return true
	}
	return strings.TrimSpace(string(theirs)) == strings.TrimSpace(string(ours))
}
