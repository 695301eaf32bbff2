//go:build linux

package accepting

import (
	"errors"
	"io/fs"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// procfs reads /proc with bare system calls and one reused buffer: a
// Check makes a few dozen reads, and os.File's poller registration, fstat
// and finalizer would cost more than the reads themselves.
type procfs struct {
	path  []byte // scratch for building paths
	buf   []byte // file contents, readlink targets, directory entries
	calls int    // reads of /proc so far (a file, a link, a directory, a stat)
}

// gone reports errors that mean the process, thread or fd went away while
// we looked: normal during a scan, never worth reporting. ESRCH comes from
// files of a task that exited between open and read; EIO from
// /proc/PID/mem once the memory a syscall argument pointed to is unmapped.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EIO)
}

// pidPath builds "/proc/PID" (and "/task/TID" when tid > 0) followed by
// rest, in p.path.
func (p *procfs) pidPath(pid, tid int, rest string) string {
	b := append(p.path[:0], "/proc/"...)
	b = strconv.AppendInt(b, int64(pid), 10)
	if tid > 0 {
		b = append(b, "/task/"...)
		b = strconv.AppendInt(b, int64(tid), 10)
	}
	b = append(b, rest...)
	p.path = b
	return string(b)
}

// fdPath builds "/proc/PID[/task/TID]/fd/N" or ".../fdinfo/N".
func (p *procfs) fdPath(pid, tid int, dir string, fd int) string {
	p.pidPath(pid, tid, dir)
	p.path = strconv.AppendInt(p.path, int64(fd), 10)
	return string(p.path)
}

// read returns the whole of a small /proc file, in p.buf; see pread.
func (p *procfs) read(path string, limit int) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	b, err := p.pread(fd, limit)
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: path, Err: err}
	}
	return b, nil
}

// pread reads an open /proc file from its start, in p.buf: the kernel
// generates its text anew at each read from offset 0. The buffer grows up
// to limit bytes; a longer file is cut there, which callers tolerate (an
// epoll set's fdinfo is one line per watched file).
func (p *procfs) pread(fd, limit int) ([]byte, error) {
	p.calls++
	n := 0
	for {
		if n == len(p.buf) {
			if len(p.buf) >= limit {
				return p.buf[:n], nil
			}
			p.buf = append(p.buf, make([]byte, len(p.buf))...)
		}
		m, err := unix.Pread(fd, p.buf[n:], int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m == 0 {
			return p.buf[:n], nil
		}
		n += m
	}
}

// readlink returns the target of a /proc symlink such as
// "socket:[12345]", in p.buf.
func (p *procfs) readlink(path string) ([]byte, error) {
	p.calls++
	for {
		n, err := unix.Readlink(path, p.buf)
		if err != nil {
			return nil, &fs.PathError{Op: "readlink", Path: path, Err: err}
		}
		if n < len(p.buf) {
			return p.buf[:n], nil
		}
		p.buf = make([]byte, 2*len(p.buf))
	}
}

// numbers lists the numeric entries of a /proc directory (PIDs, TIDs,
// fds), appending them to into.
func (p *procfs) numbers(path string, into []int) ([]int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return into, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	into, err = p.entries(fd, into)
	if err != nil {
		return into, &fs.PathError{Op: "getdents", Path: path, Err: err}
	}
	return into, nil
}

// entries lists the numeric entries of an open /proc directory from its
// start: /proc lists what exists at each reading. getdents needs no stat
// per entry and no sorting, unlike os.ReadDir.
func (p *procfs) entries(fd int, into []int) ([]int, error) {
	p.calls++
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return into, err
	}
	var names []string
	for {
		n, err := unix.Getdents(fd, p.buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return into, err
		}
		if n == 0 {
			return into, nil
		}
		_, _, names = syscall.ParseDirent(p.buf[:n], -1, names[:0])
		for _, name := range names {
			if v, err := strconv.Atoi(name); err == nil {
				into = append(into, v)
			}
		}
	}
}

// socketInode parses a readlink target "socket:[12345]".
func socketInode(target []byte) (uint64, bool) {
	const prefix = "socket:["
	if len(target) < len(prefix)+2 || string(target[:len(prefix)]) != prefix || target[len(target)-1] != ']' {
		return 0, false
	}
	return parseUint(target[len(prefix):len(target)-1], 10)
}

// parseUint parses digits in base 10 or 16 (with an optional 0x), without
// the allocation strconv would need for a []byte.
func parseUint(b []byte, base uint64) (uint64, bool) {
	if base == 16 && len(b) > 2 && b[0] == '0' && (b[1] == 'x' || b[1] == 'X') {
		b = b[2:]
	}
	// 16 hex or 19 decimal digits always fit in 64 bits.
	if len(b) == 0 || (base == 16 && len(b) > 16) || (base == 10 && len(b) > 19) {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		var d uint64
		switch {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case base == 16 && c >= 'a' && c <= 'f':
			d = uint64(c-'a') + 10
		case base == 16 && c >= 'A' && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		v = v*base + d
	}
	return v, true
}

// fields splits b on spaces and tabs into out, without allocating.
func fields(b []byte, out [][]byte) [][]byte {
	out = out[:0]
	start := -1
	for i, c := range b {
		if c == ' ' || c == '\t' || c == '\n' {
			if start >= 0 {
				out = append(out, b[start:i])
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	if start >= 0 {
		out = append(out, b[start:])
	}
	return out
}
