//go:build linux

package keeper

import (
	"errors"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/proc"
)

// member is a process the keeper holds a pidfd on.
type member struct {
	pid     int
	fd      proc.PidFD
	gen     int
	worker  bool    // a worker's main process, the leader of its own process group
	parent  *member // the member it was found to be a child of
	group   *member // the worker whose process group it is in
	gone    bool    // it has exited
	drained bool    // the keeper sent it the drain signal
	killed  bool    // worker: its process group was killed
	woken   bool    // the keeper sent it SIGCONT
	out     []int   // worker: the read ends of its stdout and stderr pipes, or none
	// hook: it descends from a hook, found by its environment or as the
	// child of one that was; the hook has ended, so it is killed at once.
	hook bool
}

// family is everything the keeper must see ended: what the master told of
// and what it finds related to that. A process is related to a member it
// holds if it is the member's child, a member of a worker's process group,
// or in a session a member created (every process in such a session
// descends from the one that created it, a descendant of the master's). It
// takes a related process only through a pidfd, after checking that the
// relation held while the member that vouches for it was still alive, so a
// reused number can never bring a stranger in.
type family struct {
	k        *keeper
	members  map[int]*member
	workers  map[int]*member   // by PID, which is also their process group's ID
	sessions map[int][]*member // members in sessions other than the master's
	mySID    int
	self     int
	unmarked map[procKey]bool // processes whose environment names another master, or none
	// ended is when the master was found gone, in clock ticks since boot
	// (0: unknown): a process started later is no orphan of its end.
	ended uint64
}

// procKey names a process for good: its PID and its start time.
type procKey struct {
	pid   int
	start uint64
}

// release ends what the master left running, as a stopping master would
// have, and returns when all of it has exited.
func (k *keeper) release() {
	if len(k.known) == 0 {
		return // a clean stop: the master reaped everything it started
	}
	start := time.Now()
	f := k.family()
	f.grow()
	if k.cfg.DrainGroup {
		for _, w := range f.workers {
			f.signalGroup(w, unix.Signal(k.cfg.DrainSignal))
		}
		for _, m := range f.members {
			m.drained = m.drained || m.group != nil
		}
	}
	f.refresh()
	if len(f.live()) == 0 {
		return // all of it exited as the master did
	}
	f.wake()
	workers := 0
	for _, w := range f.workers {
		if !w.gone {
			workers++
		}
	}
	k.log.log(lWarn, "the master is gone: stopping the processes it left running", "event", "keeper_releasing",
		"workers", workers, "processes", len(f.live()), "drain_timeout", k.cfg.DrainTimeout)
	deadline := start.Add(k.cfg.DrainTimeout)
	for {
		live := f.live()
		if len(live) == 0 {
			if f.grow() {
				f.refresh()
				continue
			}
			k.log.log(lInfo, "everything the master left running has exited", "event", "keeper_released", "took", time.Since(start))
			return
		}
		if !proc.WaitAny(live, time.Until(deadline)) {
			break
		}
		f.grow()
		f.refresh()
		f.wake()
	}
	n := f.killAll()
	k.log.log(lWarn, "processes the master left running were still running after the drain timeout: killed them", "event", "keeper_killed",
		"processes", n, "took", time.Since(start))
}

func (k *keeper) family() *family {
	f := &family{
		k: k, members: map[int]*member{}, workers: map[int]*member{}, sessions: map[int][]*member{},
		self: os.Getpid(), unmarked: map[procKey]bool{},
	}
	f.mySID, _ = unix.Getsid(0) // the master's session: the keeper never leaves it
	if now, err := proc.Uptime(); err == nil {
		f.ended = now + 1 // a tick's grace: /proc/uptime rounds down
	}
	for pid, m := range k.known {
		f.members[pid] = m
		if m.worker {
			f.workers[pid] = m
		}
	}
	for _, m := range k.known {
		p, err := proc.ReadStat(m.pid)
		if err != nil || p.Dead() || m.fd.Exited() {
			m.gone = true
			continue
		}
		// p is m's: m was alive after it was read.
		if w := f.workers[p.PGID]; !m.worker && w != nil && f.groupPinned(w) {
			m.group = w
		}
		if p.SID != f.mySID {
			f.sessions[p.SID] = append(f.sessions[p.SID], m)
		}
	}
	return f
}

// wake sends SIGCONT to every member not woken yet, as systemd does after
// its stop signal: a stopped process (SIGSTOP, a TTIN sent to the whole
// unit, a debugger) acts on neither its drain signal nor its parent-death
// signal until it runs, and would otherwise lose its requests in flight
// to the SIGKILL at the drain timeout.
func (f *family) wake() {
	for _, m := range f.members {
		if !m.gone && !m.woken {
			m.woken = true
			m.fd.Signal(unix.SIGCONT)
		}
	}
}

// live lists the pidfds of the members that have not exited.
func (f *family) live() []proc.PidFD {
	var fds []proc.PidFD
	for _, m := range f.members {
		if !m.gone {
			fds = append(fds, m.fd)
		}
	}
	return fds
}

// refresh notes who has exited and acts on it: the process group of a
// worker that exited is killed (with DrainGroup, a member found later gets
// the drain signal instead); a process outside every worker's group gets
// the drain signal once it is an orphan whose worker has exited.
func (f *family) refresh() {
	for _, m := range f.members {
		if !m.gone && m.fd.Exited() {
			m.gone = true
		}
	}
	for _, w := range f.workers {
		if w.gone && !w.killed && !f.k.cfg.DrainGroup {
			w.killed = true
			f.signalGroup(w, unix.SIGKILL)
		}
	}
	for _, m := range f.members {
		switch {
		case m.gone || m.worker || m.drained:
		case m.hook:
			m.drained = true
			m.fd.Signal(unix.SIGKILL)
		case m.group != nil && f.k.cfg.DrainGroup:
			m.drained = true
			m.fd.Signal(unix.Signal(f.k.cfg.DrainSignal))
		case m.group != nil:
			if m.group.gone {
				m.fd.Signal(unix.SIGKILL)
			}
		case (m.parent == nil || m.parent.gone) && !f.genLive(m.gen):
			m.drained = true
			m.fd.Signal(unix.Signal(f.k.cfg.DrainSignal))
		}
	}
}

// genLive reports whether generation gen still has its worker running.
func (f *family) genLive(gen int) bool {
	for _, w := range f.workers {
		if w.gen == gen && gen != 0 && !w.gone {
			return true
		}
	}
	return false
}

// killAll sends SIGKILL to every member and every worker's process group,
// waits for them to die, and repeats for whatever they started meanwhile.
// It returns how many members it killed.
func (f *family) killAll() int {
	killed := map[int]bool{}
	for round := 0; round < 8; round++ {
		for _, m := range f.members {
			if !m.gone {
				m.fd.Signal(unix.SIGKILL)
				killed[m.pid] = true
			}
		}
		for _, w := range f.workers {
			f.signalGroup(w, unix.SIGKILL)
		}
		waitAll(f.live(), time.Second) // SIGKILL takes effect when they next run
		f.refresh()
		if !f.grow() {
			break
		}
	}
	return len(killed)
}

// signalGroup signals w's process group: through w's pidfd (Linux 6.9+),
// or else each member the keeper holds through its own.
func (f *family) signalGroup(w *member, sig unix.Signal) {
	if err := signalGroup(w.fd, sig); !errors.Is(err, proc.ErrNoGroupSignal) {
		return
	}
	for _, m := range f.members {
		if (m == w || m.group == w) && !m.gone {
			m.fd.Signal(sig)
		}
	}
}

// groupPinned reports whether w's process group still exists, so that its
// number still names it. Called after reading a process's group, it proves
// that the group read was w's.
func (f *family) groupPinned(w *member) bool {
	if err := signalGroup(w.fd, 0); !errors.Is(err, proc.ErrNoGroupSignal) {
		return err == nil
	}
	return !w.fd.Exited() // its leader alive holds the number
}

// sessionAnchor returns a live member that is still in session sid, so
// that sid still names the session the keeper knows, or nil.
func (f *family) sessionAnchor(sid int) *member {
	for _, a := range f.sessions[sid] {
		if a.gone {
			continue
		}
		if p, err := proc.ReadStat(a.pid); err == nil && p.SID == sid && !a.fd.Exited() {
			return a
		}
	}
	return nil
}

// related reports whether p, as read, may be related to a member.
func (f *family) related(p proc.Stat) bool {
	if par := f.members[p.PPID]; par != nil && !par.gone {
		return true
	}
	if f.workers[p.PGID] != nil {
		return true
	}
	return p.SID != f.mySID && len(f.sessions[p.SID]) > 0
}

// grow scans /proc for processes related to the members and takes each
// one in whose relation it can prove, and then any that its environment
// says descends from the master's workers or hooks (takeMarked): its
// parent may have exited before the keeper looked, in the very moment the
// master died (a worker exits at once on its parent-death signal, a hook
// is killed by its own), leaving it no relation to prove. It reports
// whether it took any.
func (f *family) grow() bool {
	var cands []proc.Stat
	pids, _ := proc.PIDs()
	for _, pid := range pids {
		if m := f.members[pid]; pid == f.self || (m != nil && !m.gone) {
			continue
		}
		if p, err := proc.ReadStat(pid); err == nil && !p.Dead() {
			cands = append(cands, p)
		}
	}
	took := false
	for progress := true; progress; {
		progress = false
		for i := range cands {
			if cands[i].PID == 0 || !f.related(cands[i]) {
				continue
			}
			if f.take(cands[i].PID) {
				took, progress = true, true
			}
			cands[i].PID = 0
		}
		if progress {
			continue
		}
		for i := range cands {
			if cands[i].PID != 0 && f.takeMarked(cands[i]) {
				took, progress = true, true
				cands[i].PID = 0
			}
		}
	}
	return took
}

// takeMarked takes in p, as read, if it started while the master ran and
// its environment holds envnames.MasterPID with the master's PID: it
// descends from a worker or a hook, whose environment it inherited. A
// process of another master that got the same PID started after this
// one ended, and one in another PID namespace (a container's) counts
// PIDs apart: neither is taken. The environment is read through a pidfd
// opened first, so it was p's own.
func (f *family) takeMarked(p proc.Stat) bool {
	c := f.k.cfg
	key := procKey{p.PID, p.StartTime}
	if c.Master <= 0 || p.StartTime < c.MasterStart || p.StartTime > f.ended || f.unmarked[key] {
		return false
	}
	if !proc.SamePIDNamespace(p.PID) {
		f.unmarked[key] = true
		return false
	}
	fd, p, err := proc.Open(p.PID, proc.StartedAt(p.StartTime))
	if err != nil {
		return false
	}
	env, err := proc.Environ(p.PID, envnames.MasterPID, envnames.Generation, envnames.Hook)
	if err != nil || fd.Exited() || env[envnames.MasterPID] != strconv.Itoa(c.Master) {
		f.unmarked[key] = err == nil && !fd.Exited()
		fd.Close()
		return false
	}
	m := &member{pid: p.PID, fd: fd, hook: env[envnames.Hook] != ""}
	m.gen, _ = strconv.Atoi(env[envnames.Generation])
	if w := f.workers[p.PGID]; w != nil && f.groupPinned(w) {
		m.group = w
	}
	if p.SID != f.mySID {
		f.sessions[p.SID] = append(f.sessions[p.SID], m)
	}
	if old := f.members[p.PID]; old != nil {
		old.fd.Close()
	}
	f.members[p.PID] = m
	return true
}

// take opens pid and makes it a member if one of its relations is proved:
// what its stat says was read while the process was alive (proc.Open), and the
// member that vouches for it was still alive, or its group still existed,
// after that.
func (f *family) take(pid int) bool {
	fd, p, err := proc.Open(pid, f.related)
	if err != nil {
		return false
	}
	m := &member{pid: pid, fd: fd}
	if par := f.members[p.PPID]; par != nil && !par.gone && !par.fd.Exited() {
		m.parent, m.gen, m.hook = par, par.gen, par.hook
	}
	if w := f.workers[p.PGID]; w != nil && f.groupPinned(w) {
		m.group = w
		if m.parent == nil {
			m.gen = w.gen
		}
	}
	if p.SID != f.mySID {
		if a := f.sessionAnchor(p.SID); a != nil && m.parent == nil && m.group == nil {
			m.parent, m.gen = a, a.gen // not its parent, but it is as much an orphan as a is
		}
	}
	if m.parent == nil && m.group == nil {
		fd.Close()
		return false
	}
	if p.SID != f.mySID {
		f.sessions[p.SID] = append(f.sessions[p.SID], m)
	}
	if old := f.members[pid]; old != nil {
		old.fd.Close()
	}
	f.members[pid] = m
	return true
}

// waitAll waits up to d for all of the processes to exit.
func waitAll(fds []proc.PidFD, d time.Duration) {
	deadline := time.Now().Add(d)
	for len(fds) > 0 {
		if !proc.WaitAny(fds, time.Until(deadline)) {
			return
		}
		left := fds[:0]
		for _, fd := range fds {
			if !fd.Exited() {
				left = append(left, fd)
			}
		}
		fds = left
	}
}
