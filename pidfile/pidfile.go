// Package pidfile owns the master's pidfile. The file at the path is held
// with an exclusive flock(2) for the whole life of the master that wrote
// it, and the lock, not the content, says whether a master runs: the
// kernel drops it when the holder dies, however it dies.
//
// Guarantees:
//   - At most one process holds the pidfile at a path (Acquire).
//   - Its content is whole from the moment the file appears at the path:
//     the PID is written to a new file, locked there, and only then
//     renamed into place, so even `kill $(cat app.pid)` never reads a
//     partial number.
//   - The lock is on the inode that stays at the path: a file is renamed
//     over a previous one only by a process holding the previous one's
//     lock (a file whose holder has died is free for the taking), so two
//     masters starting at once cannot both win.
//   - A process writes or removes only a pidfile it holds: Release unlinks
//     the path only while it still names the held inode.
//   - Holder tells a client (`baton reload`, `baton status`) the PID of
//     the live master holding the file, or that none does, so a PID
//     reused since a master died is never taken for baton; Signal
//     signals that master through a pidfd, never by PID number.
package pidfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// HeldError is returned by Acquire when a running master holds the pidfile.
type HeldError struct {
	Path string
	PID  int // 0 if the holder's PID could not be read
}

func (e *HeldError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("pidfile %s is held by another running baton: stop it first or use another --pidfile", e.Path)
	}
	return fmt.Sprintf("pidfile %s is held by running baton master pid %d: stop it first (kill -TERM %d) or use another --pidfile", e.Path, e.PID, e.PID)
}

// StaleError is returned by Holder when no live process holds the
// pidfile: its master died without removing it, and the PID in it may
// since have been given to any other process.
type StaleError struct {
	Path string
	PID  int // what the file says, 0 if nothing readable
}

func (e *StaleError) Error() string {
	return fmt.Sprintf("pidfile %s is stale: no running baton holds it (it names pid %d, which is not baton's): start baton, or check --pidfile", e.Path, e.PID)
}

// File is a pidfile this process holds.
type File struct {
	path string
	f    *os.File // open, with the exclusive lock, until Release
}

// lockRetry is how long Acquire keeps trying a lock that is taken before
// calling the file held: a client's Holder takes a shared lock for a few
// microseconds to test it, which must not make a master refuse to start.
const lockRetry = 100 * time.Millisecond

// Acquire writes this process's PID to path and holds the file until
// Release or until the process exits. A pidfile held by a live process is
// a *HeldError; one left by a dead master is replaced.
func Acquire(path string) (*File, error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("pidfile %s: cannot write in %s: %w", path, dir, unwrapPath(err))
	}
	installed := false
	defer func() {
		if !installed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := flock(tmp, syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("pidfile %s: lock: %w", path, err)
	}
	if _, err := fmt.Fprintf(tmp, "%d\n", os.Getpid()); err != nil {
		return nil, fmt.Errorf("pidfile %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return nil, fmt.Errorf("pidfile %s: %w", path, err)
	}
	for {
		// Nothing there: link creates the path only if it is still free.
		err := os.Link(tmp.Name(), path)
		if err == nil {
			installed = true
			os.Remove(tmp.Name())
			return &File{path: path, f: tmp}, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("pidfile %s: %w", path, unwrapPath(err))
		}
		// Something is there: take it over only with its lock.
		replaced, err := takeOver(path, tmp.Name())
		if err != nil {
			return nil, err
		}
		if replaced {
			installed = true
			return &File{path: path, f: tmp}, nil
		}
		// It changed under us (removed or replaced): look again.
	}
}

// takeOver renames tmp over the file at path if no live process holds
// that file. It reports false when the path changed meanwhile.
func takeOver(path, tmp string) (bool, error) {
	old, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if errors.Is(err, syscall.ELOOP) {
		return false, fmt.Errorf("pidfile %s is a symbolic link, which baton does not follow: give the path of the file itself", path)
	}
	if err != nil {
		return false, fmt.Errorf("pidfile %s: %w", path, unwrapPath(err))
	}
	defer old.Close() // releases the old file's lock, after the rename
	fi, err := old.Stat()
	if err != nil {
		return false, fmt.Errorf("pidfile %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("pidfile %s exists and is not a regular file: remove it or use another --pidfile", path)
	}
	deadline := time.Now().Add(lockRetry)
	for {
		err = flock(old, syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		pid, _ := readPID(old)
		return false, &HeldError{Path: path, PID: pid}
	}
	if err != nil {
		return false, fmt.Errorf("pidfile %s: lock: %w", path, err)
	}
	// Nobody holds it, but it is baton's to replace only if it is a
	// pidfile (empty, or a PID): --pidfile naming some other file by
	// mistake must not destroy it.
	if fi.Size() > 0 {
		if _, err := readPID(old); err != nil {
			return false, fmt.Errorf("pidfile %s exists and holds something other than a PID: it is not a pidfile; remove it or use another --pidfile", path)
		}
	}
	// The dead master's file is ours to replace, but only if it is still
	// the one at the path: it may have been removed and recreated since
	// it was opened.
	if !samePath(path, fi) {
		return false, nil
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("pidfile %s: %w", path, unwrapPath(err))
	}
	return true, nil
}

// Release removes the pidfile, if the path still names the file this
// process holds, and gives up the lock. A file something else has put at
// the path is left alone.
func (p *File) Release() error {
	if p.f == nil {
		return nil
	}
	defer func() {
		p.f.Close()
		p.f = nil
	}()
	fi, err := p.f.Stat()
	if err != nil {
		return fmt.Errorf("pidfile %s: %w", p.path, err)
	}
	// Nobody else renames over or removes a held file, so the check and
	// the removal cannot be separated by a change at the path by baton.
	if !samePath(p.path, fi) {
		return nil
	}
	if err := os.Remove(p.path); err != nil {
		return fmt.Errorf("cannot remove pidfile %s: %w", p.path, unwrapPath(err))
	}
	return nil
}

// Holder returns the PID of the live process holding the pidfile at path:
// a *StaleError when none holds it, an error satisfying
// errors.Is(err, fs.ErrNotExist) when there is no pidfile.
//
// It tests the lock by taking a shared one for an instant, without
// waiting; a master starting in that instant retries (see Acquire).
func Holder(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	pid, perr := readPID(f)
	err = flock(f, syscall.LOCK_SH|syscall.LOCK_NB)
	if err == nil {
		return 0, &StaleError{Path: path, PID: pid}
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		return 0, fmt.Errorf("pidfile %s: lock: %w", path, err)
	}
	if perr != nil {
		return 0, perr
	}
	return pid, nil
}

// Signal sends sig to the live master holding the pidfile at path and
// returns its PID; errors are Holder's, or say why nothing was signalled.
// It never signals a PID number: it opens a pidfd for the PID the file
// names, then checks that the lock is still held and the file still names
// that PID, which proves the pidfd is the master's (a PID is not reused
// while its process lives), and signals through the pidfd. A master that
// exits in between is not signalled, nor is whatever took its PID.
func Signal(path string, sig syscall.Signal) (int, error) {
	pid, err := Holder(path)
	if err != nil {
		return 0, err
	}
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case errors.Is(err, syscall.ESRCH):
		return pid, fmt.Errorf("master pid %d exited before it could be signalled: nothing was signalled", pid)
	case errors.Is(err, syscall.ENOSYS):
		return pid, fmt.Errorf("this kernel has no pidfd_open (Linux 5.3+), so baton will not signal master pid %d by number: use its control socket", pid)
	case err != nil:
		return pid, fmt.Errorf("cannot open master pid %d: %w", pid, err)
	}
	defer unix.Close(fd)
	switch again, err := Holder(path); {
	case err != nil:
		return pid, fmt.Errorf("master pid %d is gone (%w): nothing was signalled", pid, err)
	case again != pid:
		return pid, fmt.Errorf("pidfile %s now names pid %d, not %d: another master took over; nothing was signalled", path, again, pid)
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return pid, fmt.Errorf("master pid %d exited before it could be signalled: nothing was signalled", pid)
		}
		return pid, fmt.Errorf("cannot signal master pid %d: %w", pid, err)
	}
	return pid, nil
}

// Read returns the PID recorded in path, without asking whether anyone
// holds it: see Holder.
func Read(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return readPID(f)
}

func readPID(f *os.File) (int, error) {
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 64))
	if err != nil {
		return 0, fmt.Errorf("pidfile %s: %w", f.Name(), err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pidfile %s does not hold a PID", f.Name())
	}
	return pid, nil
}

func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lockErr error
	err = rc.Control(func(fd uintptr) {
		for {
			lockErr = syscall.Flock(int(fd), how)
			if !errors.Is(lockErr, syscall.EINTR) {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return lockErr
}

// samePath reports whether path names the file fi describes.
func samePath(path string, fi os.FileInfo) bool {
	now, err := os.Lstat(path)
	return err == nil && os.SameFile(now, fi)
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

// Intact reports whether the path still names the file p holds: false
// once something removed it or put another file there.
func (p *File) Intact() bool {
	if p.f == nil {
		return false
	}
	fi, err := p.f.Stat()
	return err == nil && samePath(p.path, fi)
}

// Carry is the descriptor that holds p's lock, for an in-place upgrade:
// the lock belongs to the open file, so it survives an exec that keeps the
// descriptor open, and the new image takes it back with Adopt. The PID in
// the file stays right: exec keeps the PID.
func (p *File) Carry() int { return int(p.f.Fd()) }

// Adopt takes back, in the new image of an in-place upgrade, the pidfile
// at path held through descriptor fd, and checks that it holds the lock.
// A file removed from the path while the old image ran (or replaced) is
// held all the same, as the old image held it: a new image must not give
// up a running master for it. Intact says whether the path names it.
func Adopt(path string, fd int) (*File, error) {
	f := os.NewFile(uintptr(fd), path)
	if _, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("pidfile %s handed over as fd %d: %w", path, fd, err)
	}
	if err := flock(f, syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("pidfile %s handed over as fd %d: lock: %w", path, fd, err)
	}
	syscall.CloseOnExec(fd)
	return &File{path: path, f: f}, nil
}
