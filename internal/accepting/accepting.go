//go:build linux

package accepting

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Via says how a process waits on a socket.
type Via int

const (
	// Accept: a thread is blocked in accept(2) or accept4(2) on the socket.
	Accept Via = iota + 1
	// Recv: a thread is blocked in recvfrom, recvmsg or recvmmsg on the
	// socket, the way a datagram (UDP, unixgram) server waits.
	Recv
	// Poll: a thread is blocked in poll(2) or ppoll(2) asking to read the
	// socket.
	Poll
	// Select: a thread is blocked in select(2) or pselect6(2) with the
	// socket in its read set.
	Select
	// Epoll: the socket is registered for reading (EPOLLIN) in an epoll
	// set the process holds, whether or not a thread is in epoll_wait at
	// this instant: an event loop registers its listener when it starts
	// serving it.
	Epoll
)

func (v Via) String() string {
	switch v {
	case Accept:
		return "accept"
	case Recv:
		return "recv"
	case Poll:
		return "poll"
	case Select:
		return "select"
	case Epoll:
		return "epoll"
	}
	return "Via(" + strconv.Itoa(int(v)) + ")"
}

// Waiter is a process found waiting on one of the sockets.
type Waiter struct {
	PID int // the process
	// TID is the thread blocked in accept, recv, poll or select; 0 for
	// Epoll, which belongs to no thread.
	TID int
	Via Via
	// FD is the socket's descriptor in PID: the one the thread waits on,
	// or the one registered in the epoll set. Runtimes often dup the
	// passed fd 3, so it need not be the fd baton passed.
	FD int
	// EpollFD is the epoll instance's descriptor in PID, with Epoll.
	EpollFD int
	// Socket is the index of the socket among the files given to
	// NewSockets.
	Socket int
	Inode  uint64 // the socket's inode, as in /proc/PID/fd/N -> socket:[Inode]
}

// String says how w waits, for a log line: "pid 812 has fd 21 (socket 0)
// in epoll fd 15" or "pid 812, thread 815, blocked in accept on fd 3
// (socket 0)".
func (w Waiter) String() string {
	if w.Via == Epoll {
		return fmt.Sprintf("pid %d has fd %d (socket %d) in epoll fd %d", w.PID, w.FD, w.Socket, w.EpollFD)
	}
	return fmt.Sprintf("pid %d, thread %d, blocked in %s on fd %d (socket %d)", w.PID, w.TID, w.Via, w.FD, w.Socket)
}

// Sockets are the master's sockets, known by inode. A worker's fd for a
// socket is a dup of the master's (through exec, and again in runtimes
// that dup fd 3), and every dup shows the same inode in /proc.
type Sockets struct {
	byInode map[uint64]socketID
}

type socketID struct {
	index int
	dev   uint64 // st_dev, in the kernel's encoding as epoll's fdinfo prints it
}

// NewSockets identifies the sockets behind conns (*os.File, *net.TCPListener,
// *net.UnixListener, *net.UDPConn…): the master's listening sockets, in
// the order it passes them (fd 3, 4, …). It reads each with fstat inside
// SyscallConn().Control, never with Fd, which would switch a socket the
// master shares with its workers back to blocking mode. A conn that is not
// a socket is an error.
func NewSockets(conns ...syscall.Conn) (*Sockets, error) {
	s := &Sockets{byInode: make(map[uint64]socketID, len(conns))}
	for i, c := range conns {
		raw, err := c.SyscallConn()
		if err != nil {
			return nil, fmt.Errorf("socket %d: %w", i, err)
		}
		var st unix.Stat_t
		var statErr error
		if err := raw.Control(func(fd uintptr) { statErr = unix.Fstat(int(fd), &st) }); err != nil {
			return nil, fmt.Errorf("socket %d: %w", i, err)
		}
		if statErr != nil {
			return nil, fmt.Errorf("socket %d: fstat: %w", i, statErr)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			return nil, fmt.Errorf("socket %d: not a socket (mode %#o)", i, st.Mode)
		}
		// epoll's fdinfo prints the kernel's dev_t (major<<20 | minor),
		// stat gives the exported encoding: convert once here.
		dev := uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev))
		if _, dup := s.byInode[st.Ino]; !dup {
			s.byInode[st.Ino] = socketID{index: i, dev: dev}
		}
	}
	return s, nil
}

// Len is the number of distinct sockets.
func (s *Sockets) Len() int { return len(s.byInode) }

// DefaultInterval is how often Wait checks: readiness is seen at most this
// late, at a cost per Check of tens to a few hundred microseconds.
const DefaultInterval = 5 * time.Millisecond

// Check reports whether a process of the generation led by root waits on
// one of socks, and how. The generation is root and its descendants
// (found through /proc/PID/task/TID/children; without that file, built
// from every /proc/PID/stat, together with root's process group). Only
// these processes count: an old generation waiting on the same socket, or
// any other process holding it, does not.
//
// found is true when a waiter was seen; then err is nil. Otherwise err is
// nil when every process of the generation could be inspected, and reports
// what could not be (errors.Is(err, fs.ErrPermission): another user's
// process, a non-dumpable one, ptrace restrictions) when a waiter may have
// been missed. Processes and threads that exit during the scan are not
// errors. Check is safe for concurrent use.
func Check(root int, socks *Sockets) (w Waiter, found bool, err error) {
	if root <= 0 {
		return Waiter{}, false, fmt.Errorf("accepting: invalid pid %d", root)
	}
	if socks == nil || len(socks.byInode) == 0 {
		return Waiter{}, false, errors.New("accepting: no sockets to look for")
	}
	sc := scanners.Get().(*scanner)
	defer scanners.Put(sc)
	sc.reset(socks)
	w, found = sc.generation(root)
	if found {
		return w, true, nil
	}
	return Waiter{}, false, sc.err()
}

// Wait calls Check every interval (DefaultInterval if 0) until a process
// of the generation led by root waits on one of socks, and returns it. It
// returns early with an error only when /proc cannot serve Check at all.
// When ctx ends first, the error is ctx's, joined with the last Check's
// error, if any, which tells why the waiter may have gone unseen.
//
// The first Check runs at once; the master calls Wait only while a
// generation is starting and cancels ctx when it stops starting, so
// nothing polls while baton is idle.
func Wait(ctx context.Context, root int, socks *Sockets, interval time.Duration) (Waiter, error) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	if _, err := os.Stat("/proc/self/fdinfo"); err != nil {
		return Waiter{}, fmt.Errorf("accepting: /proc is not available: %w", err)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		w, found, err := Check(root, socks)
		if found {
			return w, nil
		}
		if root <= 0 || socks == nil || len(socks.byInode) == 0 {
			return Waiter{}, err
		}
		select {
		case <-ctx.Done():
			return Waiter{}, errors.Join(ctx.Err(), err)
		case <-t.C:
		}
	}
}

// NeverReadyHint explains a generation that was started with --ready
// notify and did not send READY=1 in time: when one of its processes
// waits on one of socks (a server that cannot notify), it returns a
// sentence for the reload's failure message saying so; otherwise "". It
// is one Check, made once, when the ready timeout fires.
func NeverReadyHint(root int, socks *Sockets) string {
	w, found, _ := Check(root, socks)
	if !found {
		return ""
	}
	return fmt.Sprintf("it waits for connections (%v) but never sent READY=1; a server that cannot notify can run with --ready accepting", w)
}

// ChildrenFiles reports whether the kernel has /proc/PID/task/TID/children
// (CONFIG_PROC_CHILDREN, on in the kernels of Debian, Ubuntu, Fedora and
// the major clouds). Without it each Check reads the stat file of every
// process on the host to find the generation, which costs in proportion
// to their number.
func ChildrenFiles() bool {
	childrenOnce.Do(func() {
		_, err := os.Stat("/proc/thread-self/children")
		if errors.Is(err, fs.ErrNotExist) {
			// thread-self is Linux 3.17+; try the long way before
			// concluding.
			_, err = os.Stat(fmt.Sprintf("/proc/%d/task/%d/children", os.Getpid(), unix.Gettid()))
		}
		hasChildren = err == nil
	})
	return hasChildren
}

var (
	childrenOnce sync.Once
	hasChildren  bool
	useChildren  = ChildrenFiles // tests force the fallback
)

var scanners = sync.Pool{New: func() any {
	return &scanner{procfs: procfs{path: make([]byte, 0, 64), buf: make([]byte, 4096)}}
}}

// scanner is the state of one Check: buffers reused across Checks through
// the pool, and what could not be inspected.
type scanner struct {
	procfs
	socks   *Sockets
	queue   []int
	seen    map[int]bool
	tids    []int
	fds     []int
	f       [][]byte
	line    []byte // a copy of a syscall line, to compare after reading memory
	mem     []byte // memory read from /proc/PID/mem
	fallbk  []int  // epoll targets to resolve by fd when fdinfo has no inode
	denials int
	denial  error // the first
}

func (s *scanner) reset(socks *Sockets) {
	s.socks = socks
	s.queue = s.queue[:0]
	if s.seen == nil {
		s.seen = make(map[int]bool)
	}
	clear(s.seen)
	s.denials, s.denial = 0, nil
}

func (s *scanner) deny(err error) {
	if s.denials == 0 {
		s.denial = err
	}
	s.denials++
}

func (s *scanner) err() error {
	if s.denials == 0 {
		return nil
	}
	return fmt.Errorf("accepting: %d entries of the generation could not be inspected, a waiter may be missed: %w", s.denials, s.denial)
}

// note records an error of a /proc read: vanishing is normal, a denial is
// remembered, anything else is reported like a denial since it too may
// hide a waiter.
func (s *scanner) note(err error) {
	if err == nil || gone(err) {
		return
	}
	s.deny(err)
}

// generation inspects root and its descendants, breadth first.
func (s *scanner) generation(root int) (Waiter, bool) {
	if !useChildren() {
		s.queue = s.fromStat(root, s.queue)
		for _, pid := range s.queue {
			if w, ok := s.process(pid, false); ok {
				return w, true
			}
		}
		return Waiter{}, false
	}
	s.queue = append(s.queue, root)
	s.seen[root] = true
	for i := 0; i < len(s.queue); i++ {
		if w, ok := s.process(s.queue[i], true); ok {
			return w, true
		}
	}
	return Waiter{}, false
}

// process inspects one process: each thread's system call, then its epoll
// sets. With children, it queues the children of each thread.
func (s *scanner) process(pid int, children bool) (Waiter, bool) {
	var err error
	s.tids, err = s.numbers(s.pidPath(pid, 0, "/task"), s.tids[:0])
	if err != nil {
		s.note(err)
		return Waiter{}, false
	}
	for _, tid := range s.tids {
		if w, ok := s.thread(pid, tid); ok {
			return w, true
		}
		if children {
			s.children(pid, tid)
		}
	}
	return s.epoll(pid)
}

// children queues the children of one thread.
func (s *scanner) children(pid, tid int) {
	b, err := s.read(s.pidPath(pid, tid, "/children"), 1<<20)
	if err != nil {
		s.note(err)
		return
	}
	s.f = fields(b, s.f)
	for _, f := range s.f {
		if v, ok := parseUint(f, 10); ok && !s.seen[int(v)] {
			s.seen[int(v)] = true
			s.queue = append(s.queue, int(v))
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
func (s *scanner) thread(pid, tid int) (Waiter, bool) {
	path := s.pidPath(pid, tid, "/syscall")
	b, err := s.read(path, 512)
	if err != nil {
		s.note(err)
		return Waiter{}, false
	}
	s.f = fields(b, s.f)
	if len(s.f) < 4 {
		return Waiter{}, false
	}
	nr, ok := parseUint(s.f[0], 10)
	if !ok {
		return Waiter{}, false
	}
	via := waitOf(int(nr))
	if via == 0 {
		return Waiter{}, false
	}
	a0, ok0 := parseUint(s.f[1], 16)
	a1, ok1 := parseUint(s.f[2], 16)
	if !ok0 || !ok1 {
		return Waiter{}, false
	}
	switch via {
	case Accept, Recv:
		return s.threadFD(pid, tid, via, int(int32(a0)))
	case Poll:
		if a1 == 0 || a1 > maxPollFDs {
			return Waiter{}, false
		}
		s.line = append(s.line[:0], b...)
		set, ok := s.memory(pid, a0, int(a1)*8)
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
			s.fds = append(s.fds, int(fd))
		}
	case Select:
		if a0 == 0 || a0 > maxSelectFDs || a1 == 0 {
			return Waiter{}, false // no read set
		}
		s.line = append(s.line[:0], b...)
		set, ok := s.memory(pid, a1, int((a0+63)/64*8))
		if !ok {
			return Waiter{}, false
		}
		// An fd_set is an array of longs, fd n at bit n%64 of long n/64;
		// read as bytes on a little-endian machine (the only ones waitOf
		// knows), that is bit n%8 of byte n/8.
		for fd := 0; fd < int(a0) && fd/8 < len(set); fd++ {
			if set[fd/8]&(1<<(fd%8)) != 0 {
				s.fds = append(s.fds, fd)
			}
		}
	}
	if len(s.fds) == 0 {
		return Waiter{}, false
	}
	// The set was read after the syscall line: if the thread has left
	// that call since, the memory may describe something else. Trust the
	// set only if the thread still shows the same call; otherwise the
	// next Check will look again.
	again, err := s.read(path, 512)
	if err != nil || !bytes.Equal(again, s.line) {
		s.note(err)
		return Waiter{}, false
	}
	for _, fd := range s.fds {
		if w, ok := s.threadFD(pid, tid, via, fd); ok {
			return w, true
		}
	}
	return Waiter{}, false
}

// threadFD reports whether fd of the thread is one of the sockets.
func (s *scanner) threadFD(pid, tid int, via Via, fd int) (Waiter, bool) {
	if fd < 0 {
		return Waiter{}, false
	}
	target, err := s.readlink(s.fdPath(pid, tid, "/fd/", fd))
	if err != nil {
		s.note(err)
		return Waiter{}, false
	}
	ino, ok := socketInode(target)
	if !ok {
		return Waiter{}, false
	}
	id, ok := s.socks.byInode[ino]
	if !ok {
		return Waiter{}, false
	}
	return Waiter{PID: pid, TID: tid, Via: via, FD: fd, Socket: id.index, Inode: ino}, true
}

// memory reads n bytes at addr of pid's memory into s.mem, resetting s.fds
// for the caller to fill.
func (s *scanner) memory(pid int, addr uint64, n int) ([]byte, bool) {
	s.fds = s.fds[:0]
	path := s.pidPath(pid, 0, "/mem")
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		s.note(&fs.PathError{Op: "open", Path: path, Err: err})
		return nil, false
	}
	defer unix.Close(fd)
	if cap(s.mem) < n {
		s.mem = make([]byte, n)
	}
	s.mem = s.mem[:n]
	// Addresses above 1<<63 are the kernel's; pread's offset is signed.
	if addr >= 1<<63 {
		return nil, false
	}
	got, err := unix.Pread(fd, s.mem, int64(addr))
	if err != nil {
		s.note(&fs.PathError{Op: "read", Path: path, Err: err})
		return nil, false
	}
	return s.mem[:got], true
}

// epoll looks for the sockets in the epoll sets pid holds. Each
// /proc/PID/fdinfo/N of an epoll fd has a line per watched file:
//
//	tfd:        3 events:       19 data:                3  pos:0 ino:156bd sdev:9
//
// tfd is the fd number as it was registered, events the requested
// events (hex), ino and sdev the watched file's inode and device (hex;
// older kernels print tfd, events and data only).
func (s *scanner) epoll(pid int) (Waiter, bool) {
	var err error
	s.fds, err = s.numbers(s.pidPath(pid, 0, "/fd"), s.fds[:0])
	if err != nil {
		s.note(err)
		return Waiter{}, false
	}
	for _, fd := range s.fds {
		target, err := s.readlink(s.fdPath(pid, 0, "/fd/", fd))
		if err != nil {
			s.note(err)
			continue
		}
		if string(target) != "anon_inode:[eventpoll]" {
			continue
		}
		if w, ok := s.epollSet(pid, fd); ok {
			return w, true
		}
	}
	return Waiter{}, false
}

func (s *scanner) epollSet(pid, epfd int) (Waiter, bool) {
	info, err := s.read(s.fdPath(pid, 0, "/fdinfo/", epfd), 1<<20)
	if err != nil {
		s.note(err)
		return Waiter{}, false
	}
	s.fallbk = s.fallbk[:0]
	for len(info) > 0 {
		line := info
		if i := bytes.IndexByte(info, '\n'); i >= 0 {
			line, info = info[:i], info[i+1:]
		} else {
			info = nil
		}
		e, ok := s.parseWatch(line)
		if !ok || e.events&(pollIn|pollRdNorm) == 0 {
			continue
		}
		if !e.haveIno {
			// Kernels before ino and sdev were added: resolve the fd
			// once the fdinfo buffer is no longer needed.
			s.fallbk = append(s.fallbk, e.tfd)
			continue
		}
		id, ok := s.socks.byInode[e.ino]
		if !ok || (e.haveDev && e.dev != id.dev) {
			continue // an inode number of another file system
		}
		return Waiter{PID: pid, Via: Epoll, FD: e.tfd, EpollFD: epfd, Socket: id.index, Inode: e.ino}, true
	}
	for _, tfd := range s.fallbk {
		if w, ok := s.threadFD(pid, 0, Epoll, tfd); ok {
			w.EpollFD = epfd
			return w, true
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
// other lines (pos, flags, mnt_id, ino of the epoll file itself).
func (s *scanner) parseWatch(line []byte) (e watch, ok bool) {
	if !bytes.HasPrefix(line, []byte("tfd:")) {
		return watch{}, false
	}
	s.f = fields(line, s.f)
	var haveTFD, haveEvents bool
	for i := 0; i < len(s.f); i++ {
		f := s.f[i]
		switch {
		case string(f) == "tfd:" && i+1 < len(s.f):
			var v uint64
			v, haveTFD = parseUint(s.f[i+1], 10)
			e.tfd = int(v)
			i++
		case string(f) == "events:" && i+1 < len(s.f):
			e.events, haveEvents = parseUint(s.f[i+1], 16)
			i++
		case bytes.HasPrefix(f, []byte("ino:")):
			e.ino, e.haveIno = parseUint(f[4:], 16)
		case bytes.HasPrefix(f, []byte("sdev:")):
			e.dev, e.haveDev = parseUint(f[5:], 16)
		}
	}
	return e, haveTFD && haveEvents
}

// fromStat lists root, its descendants and its process group from every
// /proc/PID/stat: what the generation is on a kernel without children
// files. It costs a read per process on the host.
func (s *scanner) fromStat(root int, into []int) []int {
	pids, err := s.numbers("/proc", nil)
	if err != nil {
		s.note(err)
		return append(into, root)
	}
	parent := make(map[int]int, len(pids))
	for _, pid := range pids {
		b, err := s.read(s.pidPath(pid, 0, "/stat"), 4096)
		if err != nil {
			s.note(err)
			continue
		}
		// "PID (COMM) STATE PPID PGRP …": COMM may hold spaces and
		// parentheses, so fields count from the last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		s.f = fields(b[i+1:], s.f)
		if len(s.f) < 3 {
			continue
		}
		ppid, _ := parseUint(s.f[1], 10)
		pgrp, _ := parseUint(s.f[2], 10)
		parent[pid] = int(ppid)
		if int(pgrp) == root && pid != root {
			into = append(into, pid)
		}
	}
	in := map[int]bool{root: true}
	for _, pid := range into {
		in[pid] = true
	}
	into = append([]int{root}, into...)
	for _, pid := range pids {
		// Walk up to init: a descendant of root outside its group (it
		// called setsid or setpgid) still belongs to the generation.
		for p, hops := parent[pid], 0; p > 1 && hops < 64; p, hops = parent[p], hops+1 {
			if p == root {
				if !in[pid] {
					in[pid] = true
					into = append(into, pid)
				}
				break
			}
		}
	}
	return into
}
