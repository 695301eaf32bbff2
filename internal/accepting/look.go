//go:build linux

package accepting

import (
	"bytes"
	"encoding/binary"
	"io/fs"

	"golang.org/x/sys/unix"
)

// What one look at a thread that ran finds: the system call it is blocked
// in, and whether that waits on one of the sockets.

// Linux poll(2) and epoll event bits, the same on every architecture.
const (
	pollIn     = 0x1
	pollRdNorm = 0x40
	// A thread polling more descriptors than this, or selecting on fds
	// above it, is not looked into: reading its whole set would cost more
	// than the check is worth, and servers poll a handful.
	maxPollFDs   = 4096
	maxSelectFDs = 65536
)

// thread looks at the system call t is blocked in, from
// /proc/PID/task/TID/syscall: "NR ARG0 … ARG5 SP PC" while blocked in a
// system call, "running" or "-1 SP PC" otherwise, and notes what it found
// in t. Reading it needs ptrace access to the process, as does
// /proc/PID/mem, which holds the sets of poll and select.
func (w *Watcher) thread(t *threadState) (Waiter, bool) {
	t.blocked, t.via, t.found, t.waiter = false, 0, false, Waiter{}
	found, ok := w.syscall(t)
	t.found, t.waiter = ok, found
	if t.via != Epoll {
		w.release(&t.epf)
		t.epfd = -1
	}
	return found, ok
}

// syscall reads and classifies t's system call for thread.
func (w *Watcher) syscall(t *threadState) (Waiter, bool) {
	pid, tid := t.p.pid, t.tid
	path := procFile{pid, tid, "/syscall", -1}
	b, err := w.readHeld(&t.syscall, path, 512)
	if err != nil {
		if gone(err) {
			t.p.relist = true
		}
		w.note(err)
		return Waiter{}, false
	}
	w.f = fields(b, w.f)
	if len(w.f) < 4 {
		return Waiter{}, false
	}
	nr, ok := parseUint(w.f[0], 10)
	if !ok {
		return Waiter{}, false
	}
	t.blocked = true
	via := waitOf(int(nr))
	if via == 0 {
		return Waiter{}, false
	}
	a0, ok0 := parseUint(w.f[1], 16)
	a1, ok1 := parseUint(w.f[2], 16)
	if !ok0 || !ok1 {
		return Waiter{}, false
	}
	t.via = via
	switch via {
	case Accept, Recv:
		return w.threadFD(pid, tid, via, int(int32(a0)))
	case Epoll:
		epfd := int(int32(a0))
		if epfd != t.epfd {
			w.release(&t.epf)
			t.epfd = epfd
		}
		// The thread's own fdinfo: a thread may have an fd table of its
		// own (unshare(CLONE_FILES)).
		info, err := w.readHeld(&t.epf, procFile{pid, tid, "/fdinfo/", epfd}, 1<<20)
		if err != nil {
			w.note(err)
			return Waiter{}, false
		}
		found, ok := w.epollSet(pid, tid, epfd, info)
		return found, ok
	case Poll:
		if a1 == 0 || a1 > maxPollFDs {
			return Waiter{}, false
		}
		w.line = append(w.line[:0], b...)
		set, ok := w.memory(t.p, a0, int(a1)*8)
		if !ok {
			return Waiter{}, false
		}
		for i := 0; i+8 <= len(set); i += 8 {
			// struct pollfd { int fd; short events; short revents; }
			fd := int32(binary.NativeEndian.Uint32(set[i:]))
			events := binary.NativeEndian.Uint16(set[i+4:])
			if fd < 0 || events&(pollIn|pollRdNorm) == 0 {
				continue
			}
			w.fds = append(w.fds, int(fd))
		}
	case Select:
		if a0 == 0 || a0 > maxSelectFDs || a1 == 0 {
			return Waiter{}, false // no read set
		}
		w.line = append(w.line[:0], b...)
		set, ok := w.memory(t.p, a1, int((a0+63)/64*8))
		if !ok {
			return Waiter{}, false
		}
		// An fd_set is an array of longs, fd n at bit n%64 of long n/64;
		// read as bytes on a little-endian machine (the only ones waitOf
		// knows), that is bit n%8 of byte n/8.
		for fd := 0; fd < int(a0) && fd/8 < len(set); fd++ {
			if set[fd/8]&(1<<(fd%8)) != 0 {
				w.fds = append(w.fds, fd)
			}
		}
	}
	if len(w.fds) == 0 {
		return Waiter{}, false
	}
	// The set was read after the syscall line: if the thread has left
	// that call since, the memory may describe something else. Trust the
	// set only if the thread still shows the same call; otherwise it has
	// run, and its next look reads it anew.
	again, err := w.readHeld(&t.syscall, path, 512)
	if err != nil || !bytes.Equal(again, w.line) {
		w.note(err)
		return Waiter{}, false
	}
	for _, fd := range w.fds {
		if found, ok := w.threadFD(pid, tid, via, fd); ok {
			return found, true
		}
	}
	return Waiter{}, false
}

// threadFD reports whether fd of the thread is one of the sockets.
func (w *Watcher) threadFD(pid, tid int, via Via, fd int) (Waiter, bool) {
	if fd < 0 {
		return Waiter{}, false
	}
	target, err := w.readlink(w.fdPath(pid, tid, "/fd/", fd))
	if err != nil {
		w.note(err)
		return Waiter{}, false
	}
	ino, ok := socketInode(target)
	if !ok {
		return Waiter{}, false
	}
	id, ok := w.socks.byInode[ino]
	if !ok {
		return Waiter{}, false
	}
	return Waiter{PID: pid, TID: tid, Via: via, FD: fd, Socket: id.index, Inode: ino}, true
}

// memory reads n bytes at addr of pid's memory into w.mem, resetting w.fds
// for the caller to fill. An open /proc/PID/mem stays bound to the
// address space it was opened on: once the process execs, reads of it
// return nothing, and the file is opened anew, with a new access check.
func (w *Watcher) memory(p *procState, addr uint64, n int) ([]byte, bool) {
	w.fds = w.fds[:0]
	// Addresses above 1<<63 are the kernel's; pread's offset is signed.
	if addr >= 1<<63 || n == 0 {
		return nil, false
	}
	if cap(w.mem) < n {
		w.mem = make([]byte, n)
	}
	path := w.pidPath(p.pid, 0, "/mem")
	for attempt := 0; attempt < 2; attempt++ {
		fresh := p.mem.fd < 0
		if fresh {
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				w.note(&fs.PathError{Op: "open", Path: path, Err: err})
				return nil, false
			}
			p.mem.fd = fd
			w.held++
		}
		got, err := unix.Pread(p.mem.fd, w.mem[:n], int64(addr))
		if err == nil && got > 0 {
			if w.held > w.maxHeld {
				w.release(&p.mem)
			}
			return w.mem[:got], true
		}
		w.release(&p.mem)
		if fresh {
			// EIO: the set's memory is unmapped (the thread returned);
			// nothing read: the process is exiting.
			if err != nil {
				w.note(&fs.PathError{Op: "read", Path: path, Err: err})
			}
			return nil, false
		}
	}
	return nil, false
}

// epollSet looks for the sockets in the fdinfo of epfd. An epoll fd's
// fdinfo has a line per watched file:
//
//	tfd:        3 events:       19 data:                3  pos:0 ino:156bd sdev:9
//
// tfd is the fd number as it was registered, events the requested
// events (hex), ino and sdev the watched file's inode and device (hex;
// older kernels print tfd, events and data only).
func (w *Watcher) epollSet(pid, tid, epfd int, info []byte) (Waiter, bool) {
	w.fallbk = w.fallbk[:0]
	for len(info) > 0 {
		line := info
		if i := bytes.IndexByte(info, '\n'); i >= 0 {
			line, info = info[:i], info[i+1:]
		} else {
			info = nil
		}
		e, ok := w.parseWatch(line)
		if !ok || e.events&(pollIn|pollRdNorm) == 0 {
			continue
		}
		if !e.haveIno {
			// Kernels before ino and sdev were added: resolve the fd
			// once the fdinfo buffer is no longer needed.
			w.fallbk = append(w.fallbk, e.tfd)
			continue
		}
		id, ok := w.socks.byInode[e.ino]
		if !ok || (e.haveDev && e.dev != id.dev) {
			continue // an inode number of another file system
		}
		return Waiter{PID: pid, TID: tid, Via: Epoll, FD: e.tfd, EpollFD: epfd, Socket: id.index, Inode: e.ino}, true
	}
	for _, tfd := range w.fallbk {
		if found, ok := w.threadFD(pid, tid, Epoll, tfd); ok {
			found.EpollFD = epfd
			return found, true
		}
	}
	return Waiter{}, false
}

// watch is one line of an epoll fdinfo: a watched file.
type watch struct {
	tfd              int
	events, ino, dev uint64
	haveIno, haveDev bool
}

// parseWatch parses one line of an epoll fdinfo; ok is false for the
// other lines (pos, flags, mnt_id, the epoll file's own ino) and for the
// fdinfo of other files.
func (w *Watcher) parseWatch(line []byte) (e watch, ok bool) {
	if !bytes.HasPrefix(line, []byte("tfd:")) {
		return watch{}, false
	}
	w.f = fields(line, w.f)
	var haveTFD, haveEvents bool
	for i := 0; i < len(w.f); i++ {
		f := w.f[i]
		switch {
		case string(f) == "tfd:" && i+1 < len(w.f):
			var v uint64
			v, haveTFD = parseUint(w.f[i+1], 10)
			e.tfd = int(v)
			i++
		case string(f) == "events:" && i+1 < len(w.f):
			e.events, haveEvents = parseUint(w.f[i+1], 16)
			i++
		case bytes.HasPrefix(f, []byte("ino:")):
			e.ino, e.haveIno = parseUint(f[4:], 16)
		case bytes.HasPrefix(f, []byte("sdev:")):
			e.dev, e.haveDev = parseUint(f[5:], 16)
		}
	}
	return e, haveTFD && haveEvents
}
