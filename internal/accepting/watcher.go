//go:build linux

package accepting

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/proc"
)

// StatInterval is how often a Watcher lists the generation on a kernel
// without children files, where listing it means reading the stat file of
// every process on the host.
const StatInterval = 100 * time.Millisecond

// MaxHeld bounds the /proc files a Watcher keeps open. Past it, files are
// opened, read and closed at each Check, as a one-off Check does.
const MaxHeld = 512

// Watcher checks one starting generation again and again. Opening a /proc
// file costs several times more than reading one already open (the kernel
// looks up the task, builds a dentry and an inode, checks access), so a
// Watcher keeps open what it reads at every Check: each process's task
// directory, each thread's syscall and children files, the fdinfo of the
// epoll set a thread waits on, the mem file of a process with a thread in
// poll or select; and re-reads them with pread. These files follow the
// task, not the path: a held fdinfo/N shows whatever fd N is now, and a
// file of a thread that exited fails instead of showing another that
// reused its ID. Files of processes and threads gone since the last Check
// are closed at the end of each Check.
//
// A Watcher is used by one goroutine at a time. Close releases its files;
// Wait and Check close theirs before they return.
type Watcher struct {
	procfs
	root   int
	socks  *Sockets
	round  uint64 // Checks so far; marks what the current one reached
	procs  map[int]*procFiles
	held   int
	closed bool

	members []int     // the generation, without children files
	listed  time.Time // when members was listed

	// The state of one Check.
	queue   []int
	tids    []int
	fds     []int
	f       [][]byte
	line    []byte // a syscall line, to compare after reading memory
	mem     []byte // memory read from /proc/PID/mem
	fallbk  []int  // epoll targets to resolve by fd when fdinfo has no inode
	denials int
	denial  error // the first
}

// heldFile is a /proc file kept open across Checks; fd is -1 when it is
// not (yet) held.
type heldFile struct{ fd int }

type procFiles struct {
	round   uint64
	task    heldFile // /proc/PID/task
	mem     heldFile // /proc/PID/mem, once a thread waits in poll or select
	threads map[int]*threadFiles
}

type threadFiles struct {
	round             uint64
	syscall, children heldFile
	// fdinfo of the epoll fd the thread last waited on, epfd.
	epoll heldFile
	epfd  int
}

// NewWatcher returns a Watcher of the generation led by root (the PID
// baton started) looking for socks. It opens nothing until its first
// Check.
func NewWatcher(root int, socks *Sockets) *Watcher {
	return &Watcher{
		procfs: procfs{path: make([]byte, 0, 64), buf: make([]byte, 4096)},
		root:   root,
		socks:  socks,
		procs:  make(map[int]*procFiles),
	}
}

// Check reports whether a thread of the generation waits on one of the
// sockets now, with the guarantees of the package-level Check.
func (w *Watcher) Check() (Waiter, bool, error) {
	if w.root <= 0 {
		return Waiter{}, false, fmt.Errorf("accepting: invalid pid %d", w.root)
	}
	if w.socks == nil || len(w.socks.byInode) == 0 {
		return Waiter{}, false, errors.New("accepting: no sockets to look for")
	}
	if w.closed {
		return Waiter{}, false, errors.New("accepting: Check of a closed Watcher")
	}
	w.round++
	w.denials, w.denial = 0, nil
	found, ok := w.generation()
	w.sweep()
	if ok {
		return found, true, nil
	}
	if w.denials > 0 {
		return Waiter{}, false, fmt.Errorf("accepting: %d entries of the generation of pid %d could not be inspected, a waiter may be missed: %w", w.denials, w.root, w.denial)
	}
	return Waiter{}, false, nil
}

// Close closes the files the Watcher holds. It is idempotent; a closed
// Watcher's Check fails.
func (w *Watcher) Close() error {
	w.closed = true
	w.round++ // nothing was reached in this round: sweep closes all
	w.sweep()
	return nil
}

// Held is the number of /proc files the Watcher keeps open.
func (w *Watcher) Held() int { return w.held }

// note records an error of a /proc read: vanishing is normal, a denial is
// remembered, anything else is reported like a denial since it too may
// hide a waiter.
func (w *Watcher) note(err error) {
	if err == nil || gone(err) {
		return
	}
	if w.denials == 0 {
		w.denial = err
	}
	w.denials++
}

// generation inspects root and its descendants, breadth first.
func (w *Watcher) generation() (Waiter, bool) {
	w.queue = w.queue[:0]
	if !useChildren() {
		// Listing the generation costs a read of every process's stat
		// file here: do it at most every StatInterval, and meanwhile
		// look at the processes found last time.
		if w.members == nil || time.Since(w.listed) >= StatInterval {
			w.members = w.fromStat(w.root, w.members[:0])
			w.listed = time.Now()
		}
		for _, pid := range w.members {
			if found, ok := w.process(pid, false); ok {
				return found, true
			}
		}
		return Waiter{}, false
	}
	w.queue = append(w.queue, w.root)
	for i := 0; i < len(w.queue); i++ {
		if found, ok := w.process(w.queue[i], true); ok {
			return found, true
		}
	}
	return Waiter{}, false
}

// process inspects the system call of each thread of one process. With
// children, it queues the children of each thread.
func (w *Watcher) process(pid int, children bool) (Waiter, bool) {
	pf := w.procs[pid]
	if pf != nil && pf.round == w.round {
		return Waiter{}, false // listed twice: re-parented between two reads
	}
	fresh := pf == nil
	if fresh {
		pf = &procFiles{task: heldFile{-1}, mem: heldFile{-1}, threads: map[int]*threadFiles{}}
		w.procs[pid] = pf
	}
	pf.round = w.round
	var err error
	w.tids, err = w.list(&pf.task, w.pidPath(pid, 0, "/task"), w.tids[:0])
	if (err != nil && gone(err) || err == nil && len(w.tids) == 0) && !fresh {
		// The process we held files of has exited; its PID may now be
		// another process of the generation's. Start over with it.
		w.closeProc(pf)
		delete(w.procs, pid)
		return w.process(pid, children)
	}
	if err != nil {
		w.note(err)
		return Waiter{}, false
	}
	for _, tid := range w.tids {
		tf := pf.threads[tid]
		if tf == nil {
			tf = &threadFiles{syscall: heldFile{-1}, children: heldFile{-1}, epoll: heldFile{-1}}
			pf.threads[tid] = tf
		}
		tf.round = w.round
		if found, ok := w.thread(pid, tid, pf, tf); ok {
			return found, true
		}
		if children {
			w.children(pid, tid, tf)
		}
	}
	return Waiter{}, false
}

// children queues the children of one thread.
func (w *Watcher) children(pid, tid int, tf *threadFiles) {
	b, err := w.readHeld(&tf.children, w.pidPath(pid, tid, "/children"), 1<<20)
	if err != nil {
		w.note(err)
		return
	}
	w.f = fields(b, w.f)
	for _, f := range w.f {
		if v, ok := parseUint(f, 10); ok {
			w.queue = append(w.queue, int(v))
		}
	}
}

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

// thread inspects the system call a thread is blocked in, from
// /proc/PID/task/TID/syscall: "NR ARG0 … ARG5 SP PC" while blocked in a
// system call, "running" or "-1 SP PC" otherwise. Reading it needs ptrace
// access to the process, as does /proc/PID/mem, which holds the sets of
// poll and select.
func (w *Watcher) thread(pid, tid int, pf *procFiles, tf *threadFiles) (Waiter, bool) {
	path := w.pidPath(pid, tid, "/syscall")
	b, err := w.readHeld(&tf.syscall, path, 512)
	if err != nil {
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
	via := waitOf(int(nr))
	if via == 0 {
		return Waiter{}, false
	}
	a0, ok0 := parseUint(w.f[1], 16)
	a1, ok1 := parseUint(w.f[2], 16)
	if !ok0 || !ok1 {
		return Waiter{}, false
	}
	switch via {
	case Accept, Recv:
		return w.threadFD(pid, tid, via, int(int32(a0)))
	case Epoll:
		epfd := int(int32(a0))
		if epfd != tf.epfd {
			w.release(&tf.epoll)
			tf.epfd = epfd
		}
		// The thread's own fdinfo: a thread may have an fd table of its
		// own (unshare(CLONE_FILES)).
		info, err := w.readHeld(&tf.epoll, w.fdPath(pid, tid, "/fdinfo/", epfd), 1<<20)
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
		set, ok := w.memory(pid, pf, a0, int(a1)*8)
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
		set, ok := w.memory(pid, pf, a1, int((a0+63)/64*8))
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
	// set only if the thread still shows the same call; otherwise the
	// next Check will look again.
	again, err := w.readHeld(&tf.syscall, path, 512)
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
func (w *Watcher) memory(pid int, pf *procFiles, addr uint64, n int) ([]byte, bool) {
	w.fds = w.fds[:0]
	// Addresses above 1<<63 are the kernel's; pread's offset is signed.
	if addr >= 1<<63 || n == 0 {
		return nil, false
	}
	if cap(w.mem) < n {
		w.mem = make([]byte, n)
	}
	path := w.pidPath(pid, 0, "/mem")
	for attempt := 0; attempt < 2; attempt++ {
		fresh := pf.mem.fd < 0
		if fresh {
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				w.note(&fs.PathError{Op: "open", Path: path, Err: err})
				return nil, false
			}
			pf.mem.fd = fd
			w.held++
		}
		got, err := unix.Pread(pf.mem.fd, w.mem[:n], int64(addr))
		if err == nil && got > 0 {
			if w.held > MaxHeld {
				w.release(&pf.mem)
			}
			return w.mem[:got], true
		}
		w.release(&pf.mem)
		if fresh {
			// EIO: the set's memory is unmapped (the thread returned);
			// nothing read: the process is exiting.
			w.note(&fs.PathError{Op: "read", Path: path, Err: err})
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

// readHeld reads a /proc file through h, opening it into h on first use
// while fewer than MaxHeld files are held, and dropping it when the
// process, thread or fd behind it is gone.
func (w *Watcher) readHeld(h *heldFile, path string, limit int) ([]byte, error) {
	if h.fd < 0 {
		if w.held >= MaxHeld {
			return w.read(path, limit)
		}
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		h.fd = fd
		w.held++
	}
	b, err := w.pread(h.fd, limit)
	if err != nil {
		if gone(err) {
			w.release(h)
		}
		return nil, &fs.PathError{Op: "read", Path: path, Err: err}
	}
	return b, nil
}

// list lists the numeric entries of a /proc directory through h, held as
// readHeld holds files.
func (w *Watcher) list(h *heldFile, path string, into []int) ([]int, error) {
	if h.fd < 0 {
		if w.held >= MaxHeld {
			return w.numbers(path, into)
		}
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return into, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		h.fd = fd
		w.held++
	}
	into, err := w.entries(h.fd, into)
	if err != nil {
		if gone(err) {
			w.release(h)
		}
		return into, &fs.PathError{Op: "getdents", Path: path, Err: err}
	}
	return into, nil
}

func (w *Watcher) release(h *heldFile) {
	if h.fd >= 0 {
		unix.Close(h.fd)
		h.fd = -1
		w.held--
	}
}

func (w *Watcher) closeProc(pf *procFiles) {
	w.release(&pf.task)
	w.release(&pf.mem)
	for _, tf := range pf.threads {
		w.closeThread(tf)
	}
}

func (w *Watcher) closeThread(tf *threadFiles) {
	w.release(&tf.syscall)
	w.release(&tf.children)
	w.release(&tf.epoll)
}

// sweep closes the files of what the last Check did not reach: processes
// that left the generation or exited, threads that exited.
// The Check that found a waiter stopped early, so it may close files a
// next Check opens again; there rarely is one.
func (w *Watcher) sweep() {
	for pid, pf := range w.procs {
		if pf.round != w.round {
			w.closeProc(pf)
			delete(w.procs, pid)
			continue
		}
		for tid, tf := range pf.threads {
			if tf.round != w.round {
				w.closeThread(tf)
				delete(pf.threads, tid)
			}
		}
	}
}

// fromStat lists root and its descendants from every /proc/PID/stat:
// the generation on a kernel without children files. It costs a read per
// process on the host.
func (w *Watcher) fromStat(root int, into []int) []int {
	into = append(into, root)
	pids, err := w.numbers("/proc", nil)
	if err != nil {
		w.note(err)
		return into
	}
	parent := make(map[int]int, len(pids))
	for _, pid := range pids {
		b, err := w.read(w.pidPath(pid, 0, "/stat"), 4096)
		if err != nil {
			w.note(err)
			continue
		}
		if st, err := proc.ParseStat(b); err == nil {
			parent[pid] = st.PPID
		}
	}
	for _, pid := range pids {
		for p, hops := parent[pid], 0; p > 1 && hops < 64; p, hops = parent[p], hops+1 {
			if p == root {
				into = append(into, pid)
				break
			}
		}
	}
	return into
}
