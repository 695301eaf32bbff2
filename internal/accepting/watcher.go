//go:build linux

package accepting

import (
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

// MaxHeld bounds the /proc files a Watcher keeps open, a quarter of the
// open-file limit if that is lower: about one per thread of the generation,
// each also holding a page of kernel memory once read (8 MiB at most).
// Past it, files are opened, read and closed each time, as a one-off Check
// does, at about three times the cost.
const MaxHeld = 2048

// HotPerCheck and ColdPerCheck bound the threads a Watcher's Check looks
// at, after its first; a thread seen to have run stays hot for HotFor
// Checks (1 s at DefaultInterval). See Watcher.
const (
	HotPerCheck  = 64
	ColdPerCheck = 16
	HotFor       = 200
)

// When the generation settles (a Check sees nothing run, right after one
// that saw something run), the next Checks look at up to SweepPerCheck
// cold threads each until all have been looked at once: a server that has
// just begun to wait is found at once, whichever of its threads waits. A
// sweep begins at most once every SweepEvery Checks (1 s at
// DefaultInterval).
const (
	SweepPerCheck = 256
	SweepEvery    = 200
)

// Watcher checks one starting generation again and again, at a cost that
// does not grow with the number of its threads.
//
// Its first Check looks at every thread, as the package-level Check does.
// From then on it knows each thread's last state and how much the thread
// had run then: its run time and the number of times it was scheduled, from
// /proc/PID/task/TID/schedstat. A thread whose schedstat is unchanged has
// not run since: it waits where it waited and has the children it had; only
// the registrations of the epoll set it waits on can have changed (another
// thread or process may add to it), so only that set is read again. A
// schedstat is one short read that needs no ptrace access; a thread that
// ran costs several more (its syscall and children files, and the set it
// waits on).
//
// Each later Check looks at up to HotPerCheck threads among those likeliest
// to wait on a socket next: new ones, those last seen waiting in a call
// that can be on a socket (accept, recv, poll, select, epoll_wait) or not
// blocked in a call at all, and those seen to have run in the last HotFor
// Checks. Then it looks at up to ColdPerCheck of the others, in turn:
// threads last seen blocked elsewhere (a lock, a sleep, a pipe) that have
// not run lately. Both kinds take turns, so a thread that has begun to wait
// on a socket is seen within ⌈hot threads/HotPerCheck⌉ or ⌈cold
// threads/ColdPerCheck⌉ Checks: at the next one in a generation of up to 16
// threads, within 19 (95 ms at DefaultInterval) among 300, within 125
// (625 ms) among 2,000; and in the Checks after the generation settles,
// within ⌈cold threads/SweepPerCheck⌉.
//
// The generation is the process the Watcher was made for and its
// descendants. A process joins it when a look at a thread of a member finds
// it in the thread's children file (and it is still that member's child
// once held by a pidfd); it leaves with its descendants when it exits, and
// the kernel hands them to init or a subreaper. A process's threads are
// listed anew when their number changes (the link count of its
// /proc/PID/task, as cheap for 2,000 threads as for one) or one is found
// gone.
//
// Opening a /proc file costs several times more than reading one already
// open (the kernel looks up the task, builds a dentry and an inode, checks
// access), so a Watcher keeps open what it reads again: each process's
// task directory, each thread's schedstat, the syscall and children files
// of the hot threads, the fdinfo of the epoll set a thread waits on, the
// mem file of a process with a thread in poll or select; and re-reads them
// with pread. These files follow the task, not the path: a held fdinfo/N
// shows whatever fd N is now, and a file of a thread that exited fails
// instead of showing another that reused its ID.
//
// A Watcher is used by one goroutine at a time. Close releases its files;
// Wait and Check close theirs before they return.
type Watcher struct {
	procfs
	root   int
	socks  *Sockets
	procs  []*procState // the generation, each after its parent
	byPID  map[int]*procState
	hot    turns  // the threads likeliest to wait on a socket next
	cold   turns  // the others
	dirty  bool   // a process joined or left
	checks uint64 // Checks so far
	// active: the last Check saw a thread that had run, or a thread or
	// process come or go; wasActive: the Check before did. sweep: how
	// many cold threads are left to look at since the generation last
	// settled, at the Check swept. coldScale multiplies ColdPerCheck,
	// for Wait's longer intervals.
	active    bool
	wasActive bool
	sweep     int
	swept     uint64
	coldScale int
	held      int
	maxHeld   int
	closed    bool
	gone      bool // the root has exited: nothing of the generation is left

	members []int       // the generation, without children files
	parents map[int]int // their parents, as read
	listed  time.Time   // when members was listed

	// The state of one Check.
	picks   []*threadState
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

// procState is a process of the generation.
type procState struct {
	pid      int
	pidfd    proc.PidFD // -1 on a kernel without pidfds
	parent   *procState // nil for the root
	task     heldFile   // /proc/PID/task
	mem      heldFile   // /proc/PID/mem, once a thread waits in poll or select
	nthreads int        // how many threads were listed
	relist   bool       // a thread was found gone
	threads  []*threadState
	byTID    map[int]*threadState
	gone     bool
}

// threadState is what a Watcher knows of one thread.
type threadState struct {
	p                                 *procState
	tid                               int
	schedstat, syscall, children, epf heldFile // epf: the fdinfo of epfd
	key                               runKey   // how much it had run when last looked at
	check                             uint64   // the Check that last looked at it
	seen                              bool     // it was looked at fully, and could be
	recheck                           bool     // to be looked at fully, run or not
	ranAt                             uint64   // the last Check that found it had run
	blocked                           bool     // it was blocked in a system call
	via                               Via      // … in one that can wait on a socket
	epfd                              int      // … on this epoll set, with Epoll
	found                             bool     // … on one of the sockets
	waiter                            Waiter
	inHot                             bool   // it is in the hot turns, else in the cold
	seq                               uint32 // its entry in the turns; changed when it moves or goes
}

// hot reports, at Check now, whether t is among the threads likeliest to
// wait on a socket next.
func (t *threadState) hot(now uint64) bool {
	return !t.seen || t.via != 0 || !t.blocked || t.ranAt > 0 && now-t.ranAt < HotFor
}

// turns are threads taking turns to be looked at: each Check takes the
// next few. A thread that moves to the other turns, or goes, leaves a
// stale entry behind, skipped and swept out once they are half.
type turns struct {
	entries []turn
	at      int // where the next Check begins
	stale   int
}

type turn struct {
	t   *threadState
	seq uint32
}

func (l *turns) add(t *threadState) { l.entries = append(l.entries, turn{t, t.seq}) }

func (l *turns) len() int { return len(l.entries) - l.stale }

// take appends to picks up to n threads not yet looked at in this check,
// from where the last take stopped.
func (l *turns) take(picks []*threadState, n int, check uint64) []*threadState {
	if l.stale > len(l.entries)/2 {
		kept := l.entries[:0]
		for _, e := range l.entries {
			if e.seq == e.t.seq {
				kept = append(kept, e)
			}
		}
		clear(l.entries[len(kept):])
		l.entries, l.stale, l.at = kept, 0, 0
	}
	m, from := len(l.entries), l.at
	for i := 0; i < m && n > 0; i++ {
		j := (from + i) % m
		if e := l.entries[j]; e.seq == e.t.seq && e.t.check != check {
			picks = append(picks, e.t)
			n--
			l.at = (j + 1) % m
		}
	}
	return picks
}

// file puts t in the turns its state calls for: a new thread in the hot
// ones, a thread that changed in the others.
func (w *Watcher) file(t *threadState, fresh bool) {
	hot := t.hot(w.checks)
	if !fresh {
		if hot == t.inHot {
			return
		}
		w.leave(t)
	}
	t.inHot = hot
	if hot {
		w.hot.add(t)
	} else {
		w.cold.add(t)
	}
}

// leave takes t out of its turns.
func (w *Watcher) leave(t *threadState) {
	t.seq++
	if t.inHot {
		w.hot.stale++
	} else {
		w.cold.stale++
	}
}

// runKey is a thread's schedstat: run time (ns) and times scheduled. Any
// run changes it: a thread that ran was scheduled in, and its run time is
// brought up to date when it blocks. Zero means unknown (a kernel without
// CONFIG_SCHED_INFO shows "0 0 0").
type runKey struct{ runtime, scheduled uint64 }

// NewWatcher returns a Watcher of the generation led by root (the PID
// baton started) looking for socks. It opens nothing until its first
// Check.
func NewWatcher(root int, socks *Sockets) *Watcher {
	w := &Watcher{
		procfs:  procfs{path: make([]byte, 0, 64), buf: make([]byte, 4096)},
		root:    root,
		socks:   socks,
		byPID:   make(map[int]*procState),
		maxHeld: MaxHeld,
	}
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil && lim.Cur/4 < MaxHeld {
		w.maxHeld = int(lim.Cur / 4)
	}
	return w
}

// Check reports whether a thread of the generation waits on one of the
// sockets now. The first Check of a Watcher looks at every thread and has
// the guarantees of the package-level Check; a later one looks at the
// threads that may have changed, within the bounds said at Watcher, and
// reports errors of those only.
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
	w.checks++
	w.denials, w.denial = 0, nil
	w.wasActive, w.active = w.active, false
	if found, ok := w.check(w.checks == 1); ok {
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
	for _, p := range w.procs {
		w.closeProc(p)
	}
	w.procs, w.hot, w.cold = nil, turns{}, turns{}
	clear(w.byPID)
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

// maxRounds bounds how often a full Check goes back for processes it found
// on the way: a generation that forks without end is still checked.
const maxRounds = 64

// check brings the generation up to date and takes the turns; a full check
// looks at every thread, including those of the processes it finds.
func (w *Watcher) check(full bool) (Waiter, bool) {
	for round := 0; ; round++ {
		w.update()
		if found, ok := w.turns(full); ok {
			return found, true
		}
		if !full || !w.dirty || round == maxRounds {
			break
		}
	}
	if w.wasActive && !w.active && w.checks-w.swept >= SweepEvery {
		// The generation has just settled: what it waits on now it may
		// wait on for long. Sweep the cold threads, once.
		w.sweep, w.swept = w.cold.len(), w.checks
	}
	return Waiter{}, false
}

// update drops the processes that exited, adds the root on the first call,
// lists anew the threads of the processes whose number of threads changed
// and, without children files, lists the generation every StatInterval.
func (w *Watcher) update() {
	if w.gone {
		return
	}
	if len(w.procs) == 0 {
		denials := w.denials
		if w.adopt(nil, 0, w.root) == nil {
			// It has exited already, or never was; or it could not be
			// opened, which was noted, and is tried again.
			w.gone = w.denials == denials
			return
		}
	}
	dropped := false
	for _, p := range w.procs {
		if !p.gone && w.exited(p) {
			p.gone, dropped = true, true
		}
	}
	if !useChildren() && (w.members == nil || time.Since(w.listed) >= StatInterval) {
		dropped = w.fromStatMembers() || dropped
	}
	if dropped {
		w.dropGone()
	}
	for _, p := range w.procs {
		n, err := w.threadCount(p)
		if err != nil {
			w.note(err)
			continue
		}
		if n != p.nthreads || p.relist {
			w.listThreads(p)
		}
	}
}

// exited reports whether p has exited: through its pidfd, or where the
// kernel has none, once it has been reaped (no threads left to count).
func (w *Watcher) exited(p *procState) bool {
	if p.pidfd >= 0 {
		return p.pidfd.Exited()
	}
	n, err := w.threadCount(p)
	return err != nil && gone(err) || err == nil && n <= 0
}

// threadCount is the number of threads of p: the link count of its task
// directory is 2 plus that number, which the kernel reads without going
// through the threads.
func (w *Watcher) threadCount(p *procState) (int, error) {
	w.calls++
	var st unix.Stat_t
	var err error
	if p.task.fd >= 0 {
		err = unix.Fstat(p.task.fd, &st)
	} else {
		err = unix.Stat(w.pidPath(p.pid, 0, "/task"), &st)
	}
	if err != nil {
		return 0, &fs.PathError{Op: "stat", Path: w.pidPath(p.pid, 0, "/task"), Err: err}
	}
	return int(st.Nlink) - 2, nil
}

// dropGone forgets the processes marked gone and their descendants (the
// kernel gave those to init or a subreaper), and has every thread left
// looked at fully again, children files included, at its next turn: a
// subreaper of the generation may have adopted one of them.
func (w *Watcher) dropGone() {
	kept := w.procs[:0]
	for _, p := range w.procs {
		if !p.gone && p.parent != nil && p.parent.gone {
			p.gone = true // parents come first in procs
		}
		if p.gone {
			if p.parent == nil {
				w.gone = true
			}
			w.closeProc(p)
			delete(w.byPID, p.pid)
			continue
		}
		kept = append(kept, p)
	}
	clear(w.procs[len(kept):])
	w.procs = kept
	for _, p := range w.procs {
		for _, t := range p.threads {
			t.recheck = true
		}
	}
	w.dirty, w.active = true, true
}

// adopt adds pid, a child of parent (the root when parent is nil), to the
// generation. It takes it only through a pidfd, with ppid still its parent
// once the pidfd is held, so a reused PID never brings in a stranger. It
// returns nil when the process is gone, or no longer ppid's child.
func (w *Watcher) adopt(parent *procState, ppid, pid int) *procState {
	var expect func(proc.Stat) bool
	if ppid > 0 {
		expect = proc.ParentIs(ppid)
	}
	fd, _, err := proc.Open(pid, expect)
	switch {
	case errors.Is(err, unix.ENOSYS):
		// No pidfds (before Linux 5.3): the parent as read now will do.
		fd = -1
		if s, err := proc.ReadStat(pid); err != nil || s.Dead() || expect != nil && !expect(s) {
			return nil
		}
	case errors.Is(err, unix.ESRCH), errors.Is(err, proc.ErrNotExpected):
		return nil
	case err != nil:
		w.note(err)
		return nil
	}
	p := &procState{pid: pid, pidfd: fd, parent: parent, task: heldFile{-1}, mem: heldFile{-1}, nthreads: -1,
		byTID: map[int]*threadState{}}
	// The task directory, opened after the pidfd: if the process is still
	// alive once it is open, it is that process's.
	if w.held < w.maxHeld {
		tfd, err := unix.Open(w.pidPath(pid, 0, "/task"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == nil {
			p.task.fd = tfd
			w.held++
		}
	}
	if fd >= 0 && fd.Exited() {
		w.closeProc(p)
		return nil
	}
	w.procs = append(w.procs, p)
	w.byPID[pid] = p
	w.dirty, w.active = true, true
	return p
}

// listThreads lists p's threads anew: new ones are added (to be looked at
// first), those gone are forgotten.
func (w *Watcher) listThreads(p *procState) {
	var err error
	w.tids, err = w.list(&p.task, w.pidPath(p.pid, 0, "/task"), w.tids[:0])
	if err != nil {
		w.note(err)
		return
	}
	p.relist = false
	p.nthreads = len(w.tids)
	w.active = true
	listed := make(map[int]bool, len(w.tids))
	for _, tid := range w.tids {
		listed[tid] = true
		if p.byTID[tid] != nil {
			continue
		}
		t := &threadState{p: p, tid: tid, schedstat: heldFile{-1}, syscall: heldFile{-1}, children: heldFile{-1},
			epf: heldFile{-1}, epfd: -1}
		p.byTID[tid] = t
		p.threads = append(p.threads, t)
		w.file(t, true)
	}
	// Those not listed have exited.
	kept := p.threads[:0]
	for _, t := range p.threads {
		if listed[t.tid] {
			kept = append(kept, t)
			continue
		}
		w.closeThread(t)
		w.leave(t)
		delete(p.byTID, t.tid)
	}
	clear(p.threads[len(kept):])
	p.threads = kept
}

// turns looks at every thread (full), or takes the hot and the cold
// turns.
func (w *Watcher) turns(full bool) (Waiter, bool) {
	w.dirty = false
	w.picks = w.picks[:0]
	if full {
		for _, p := range w.procs {
			for _, t := range p.threads {
				if t.check != w.checks {
					w.picks = append(w.picks, t)
				}
			}
		}
	} else {
		w.picks = w.hot.take(w.picks, HotPerCheck, w.checks)
		cold := ColdPerCheck * max(w.coldScale, 1)
		if w.sweep > 0 {
			n := min(w.sweep, SweepPerCheck)
			w.sweep -= n
			cold = max(cold, n)
		}
		w.picks = w.cold.take(w.picks, cold, w.checks)
	}
	for _, t := range w.picks {
		if t.p.gone {
			continue // its process left during this Check
		}
		found, ok := w.look(t)
		w.file(t, false)
		if ok {
			return found, true
		}
	}
	return Waiter{}, false
}

// look looks at one thread: at its schedstat, and if it ran since the
// last look (or was never looked at fully, or is to be again), at
// everything else.
func (w *Watcher) look(t *threadState) (Waiter, bool) {
	t.check = w.checks
	key, err := w.runKey(t)
	if err != nil {
		if gone(err) {
			t.p.relist = true
		}
		w.note(err)
		return Waiter{}, false
	}
	ran := t.seen && key != t.key
	if t.seen && !ran && !t.recheck && key != (runKey{}) {
		if !t.hot(w.checks) {
			// Blocked elsewhere: its syscall and children files wait
			// closed until it runs, leaving room for others.
			w.release(&t.syscall)
			w.release(&t.children)
		}
		if t.via == Epoll {
			return w.epollAgain(t)
		}
		return t.waiter, t.found
	}
	if ran {
		t.ranAt = w.checks
	}
	if ran || !t.seen {
		w.active = true
	}
	t.key, t.recheck = key, false
	denials := w.denials
	found, ok := w.thread(t)
	if !ok && useChildren() {
		w.children(t)
	}
	// A thread that could not be looked at fully is looked at again,
	// and its denial reported, at every Check.
	t.seen = w.denials == denials
	return found, ok
}

// runKey reads t's schedstat: "RUNTIME WAIT TIMESLICES".
func (w *Watcher) runKey(t *threadState) (runKey, error) {
	b, err := w.readHeld(&t.schedstat, procFile{t.p.pid, t.tid, "/schedstat", -1}, 128)
	if err != nil {
		return runKey{}, err
	}
	w.f = fields(b, w.f)
	if len(w.f) < 3 {
		return runKey{}, nil
	}
	run, ok1 := parseUint(w.f[0], 10)
	times, ok2 := parseUint(w.f[2], 10)
	if !ok1 || !ok2 {
		return runKey{}, nil
	}
	return runKey{run, times}, nil
}

// children adds to the generation the children of thread t not in it yet.
func (w *Watcher) children(t *threadState) {
	b, err := w.readHeld(&t.children, procFile{t.p.pid, t.tid, "/children", -1}, 1<<20)
	if err != nil {
		w.note(err)
		return
	}
	w.f = fields(b, w.f)
	var kids []int
	for _, f := range w.f {
		if v, ok := parseUint(f, 10); ok && w.byPID[int(v)] == nil {
			kids = append(kids, int(v))
		}
	}
	for _, kid := range kids {
		w.adopt(t.p, t.p.pid, kid)
	}
}

// fromStatMembers lists the generation from every process's stat file:
// those no longer in it are marked gone, those new to it adopted. It
// reports whether some were marked gone.
func (w *Watcher) fromStatMembers() bool {
	w.members = w.fromStat(w.root, w.members[:0])
	w.listed = time.Now()
	in := make(map[int]bool, len(w.members))
	for _, pid := range w.members {
		in[pid] = true
	}
	dropped := false
	for _, p := range w.procs {
		if !in[p.pid] && p.parent != nil {
			p.gone, dropped = true, true
		}
	}
	// fromStat lists descendants in no order: adopt each once its
	// parent is in.
	for progress := true; progress; {
		progress = false
		for _, pid := range w.members {
			if w.byPID[pid] != nil {
				continue
			}
			if parent := w.byPID[w.parents[pid]]; parent != nil && !parent.gone {
				if w.adopt(parent, parent.pid, pid) != nil {
					progress = true
				}
			}
		}
	}
	return dropped
}

// epollAgain reads the epoll set of a thread that has waited on it since
// it was last looked at: only its registrations can have changed.
func (w *Watcher) epollAgain(t *threadState) (Waiter, bool) {
	info, err := w.readHeld(&t.epf, procFile{t.p.pid, t.tid, "/fdinfo/", t.epfd}, 1<<20)
	if err != nil {
		w.note(err)
		return Waiter{}, false
	}
	t.waiter, t.found = w.epollSet(t.p.pid, t.tid, t.epfd, info)
	return t.waiter, t.found
}

// procFile names a file of a task: /proc/PID[/task/TID]/REST[FD]. Its
// path is built only to open the file or to report an error, which
// re-reading a held file does neither.
type procFile struct {
	pid, tid int
	rest     string
	fd       int // appended to rest when >= 0
}

func (w *Watcher) path(f procFile) string {
	if f.fd >= 0 {
		return w.fdPath(f.pid, f.tid, f.rest, f.fd)
	}
	return w.pidPath(f.pid, f.tid, f.rest)
}

// readHeld reads a /proc file through h, opening it into h on first use
// while fewer than the most it may hold are held, and dropping it when the
// process, thread or fd behind it is gone.
func (w *Watcher) readHeld(h *heldFile, f procFile, limit int) ([]byte, error) {
	if h.fd < 0 {
		if w.held >= w.maxHeld {
			return w.read(w.path(f), limit)
		}
		path := w.path(f)
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
		return nil, &fs.PathError{Op: "read", Path: w.path(f), Err: err}
	}
	return b, nil
}

// list lists the numeric entries of a /proc directory through h, held as
// readHeld holds files.
func (w *Watcher) list(h *heldFile, path string, into []int) ([]int, error) {
	if h.fd < 0 {
		if w.held >= w.maxHeld {
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

func (w *Watcher) closeProc(p *procState) {
	w.release(&p.task)
	w.release(&p.mem)
	for _, t := range p.threads {
		w.closeThread(t)
		w.leave(t)
	}
	if p.pidfd >= 0 {
		p.pidfd.Close()
		p.pidfd = -1
	}
}

func (w *Watcher) closeThread(t *threadState) {
	w.release(&t.schedstat)
	w.release(&t.syscall)
	w.release(&t.children)
	w.release(&t.epf)
}

// fromStat lists root and its descendants from every /proc/PID/stat,
// and notes their parents in w.parents: the generation on a kernel without
// children files. It costs a read per process on the host.
func (w *Watcher) fromStat(root int, into []int) []int {
	into = append(into, root)
	pids, err := w.numbers("/proc", nil)
	if err != nil {
		w.note(err)
		return into
	}
	parent := make(map[int]int, len(pids))
	w.parents = parent
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
