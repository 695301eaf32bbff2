package upgrader

import (
	"fmt"
	"syscall"
	"time"

	"github.com/baton-sh/baton/internal/host"
)

// engineState is the loop's state as an in-place upgrade hands it over
// (HandOver.Engine). It is taken only when the master is quiet (see
// quiet): workers serve or drain, nothing starts. Times a timer waits for
// are kept as what was left of it at HandOver.At.
type engineState struct {
	Started     time.Time        `json:"started"`
	LastGen     int              `json:"last_gen"`
	Current     int              `json:"current"`
	Generations []genSnapshot    `json:"generations"`
	Slots       []slotSnapshot   `json:"slots"`
	Workers     []workerSnapshot `json:"workers"`
	Strays      []straySnapshot  `json:"strays,omitempty"`
	Ended       []endedSnapshot  `json:"ended,omitempty"`
	Restarts    int              `json:"restarts"`
	LastReload  *ReloadStatus    `json:"last_reload,omitempty"`
	Upgraded    time.Time        `json:"upgraded"`
	LastSuccess time.Time        `json:"last_success"`
	Served      bool             `json:"served"`
	Probe       probeSnapshot    `json:"probe"`
	// MemoryIn is when the next --max-memory check was due, after At.
	MemoryIn *time.Duration  `json:"memory_in,omitempty"`
	Pending  pendingSnapshot `json:"pending"`
	Heals    []healSnapshot  `json:"heals,omitempty"`
}

type genSnapshot struct {
	N       int          `json:"n"`
	Release host.Release `json:"release"`
}

type slotSnapshot struct {
	Index     int            `json:"index"`
	Gen       int            `json:"gen"`
	Crashes   int            `json:"crashes,omitempty"`
	Restarts  int            `json:"restarts,omitempty"`
	HealFails int            `json:"heal_fails,omitempty"`
	RestartIn *time.Duration `json:"restart_in,omitempty"` // a crash restart was due this long after At
	// RetryIn is when its serving worker's failed replacement (for
	// RetryWhy) was to be tried again, after At.
	RetryIn  *time.Duration `json:"retry_in,omitempty"`
	RetryWhy Trigger        `json:"retry_why,omitempty"`
}

type workerSnapshot struct {
	PID           int           `json:"pid"`
	Gen           int           `json:"gen"`
	Index         int           `json:"index"`
	State         string        `json:"state"` // serving or draining
	Trigger       Trigger       `json:"trigger"`
	Started       time.Time     `json:"started"`
	ReadyAt       time.Time     `json:"ready_at"`
	DrainLeft     time.Duration `json:"drain_left,omitempty"`
	Killed        bool          `json:"killed,omitempty"`
	MainExit      string        `json:"main_exit,omitempty"`
	Status        string        `json:"status,omitempty"`
	WatchdogEvery time.Duration `json:"watchdog_every,omitempty"`
	// A serving worker's watchdog and --max-age timers, as time left
	// (absent: none armed; a version-1 state has none).
	WatchdogLeft *time.Duration `json:"watchdog_left,omitempty"`
	AgeLeft      *time.Duration `json:"age_left,omitempty"`
}

type straySnapshot struct {
	PID     int            `json:"pid"`
	Gen     int            `json:"gen"`
	Index   int            `json:"index"`
	Comm    string         `json:"comm"`
	PGID    int            `json:"pgid"`
	Hook    bool           `json:"hook,omitempty"`
	Drained bool           `json:"drained,omitempty"`
	KillIn  *time.Duration `json:"kill_in,omitempty"`
}

type endedSnapshot struct {
	Gen   int       `json:"gen"`
	Index int       `json:"index"`
	At    time.Time `json:"at"`
}

type probeSnapshot struct {
	Seen     bool `json:"seen"`
	OK       bool `json:"ok"`
	Failures int  `json:"failures"`
	// NextIn is when the next probe was due, after At; Heals and HealIn
	// its replacements in a row and when the next may be (its backoff);
	// Next the slot to replace next.
	NextIn *time.Duration `json:"next_in,omitempty"`
	Heals  int            `json:"heals,omitempty"`
	HealIn *time.Duration `json:"heal_in,omitempty"`
	Next   int            `json:"next,omitempty"`
}

// pendingSnapshot is what was asked while the master handed over.
type pendingSnapshot struct {
	Reload *Trigger `json:"reload,omitempty"`
	Stop   int      `json:"stop,omitempty"`
	// Exits are the workers and strays this image reaped after the loop
	// stopped taking events: the new image cannot reap them again.
	Exits []exitSnapshot `json:"exits,omitempty"`
}

type exitSnapshot struct {
	PID    int                `json:"pid"`
	Status syscall.WaitStatus `json:"status"`
}

type healSnapshot struct {
	PID     int     `json:"pid"`
	Trigger Trigger `json:"trigger"`
}

// handOverState describes the master for its new image, with the Host's
// state hs and the caller's files and data.
func (m *Master) handOverState(hs host.State, files map[string]int, data []byte) (*HandOver, error) {
	now := m.env.now()
	// Every timer goes as the time it had left (see doc.go): the loop
	// keeps each one's deadline beside it.
	until := func(t time.Time) *time.Duration {
		d := max(t.Sub(now), 0)
		return &d
	}
	p := &m.heals.probe
	st := engineState{Started: m.started, LastGen: m.lastGen, Current: m.currentGen(), Restarts: m.restarts,
		LastReload: m.lastReload, Upgraded: m.upgraded, LastSuccess: m.lastSuccess, Served: m.hooks.served,
		Probe: probeSnapshot{Seen: p.seen, OK: p.ok, Failures: p.failures, Heals: p.heals, Next: p.next}}
	if p.tick != nil {
		st.Probe.NextIn = until(p.tickAt)
	}
	if p.nextHeal.After(now) {
		st.Probe.HealIn = until(p.nextHeal)
	}
	if m.heals.memTick != nil {
		st.MemoryIn = until(m.heals.memAt)
	}
	gens := map[*generation]bool{}
	addGen := func(g *generation) {
		if g != nil && !gens[g] {
			gens[g] = true
			st.Generations = append(st.Generations, genSnapshot{N: g.n, Release: g.release})
		}
	}
	addGen(m.current)
	for _, s := range m.slots {
		ss := slotSnapshot{Index: s.index, Crashes: s.crashes, Restarts: s.restarts, HealFails: s.healFails}
		if s.gen != nil {
			ss.Gen = s.gen.n
			addGen(s.gen)
		}
		if s.restartDue != nil {
			ss.RestartIn = until(s.restartAt)
		}
		if s.healRetry != nil {
			ss.RetryIn, ss.RetryWhy = until(s.retryAt), s.retryWhy
		}
		st.Slots = append(st.Slots, ss)
	}
	for _, w := range m.sortedWorkers() {
		if w.state != serving && w.state != draining {
			return nil, fmt.Errorf("worker %d is %s", w.pid, w.state)
		}
		addGen(w.gen)
		ws := workerSnapshot{PID: w.pid, Gen: w.gen.n, Index: w.slot.index, State: w.state.String(), Trigger: w.trigger,
			Started: w.started, ReadyAt: w.readyAt, Killed: w.killed, MainExit: w.mainExit, Status: w.status.text,
			WatchdogEvery: w.watchdogEvery}
		if w.state == serving {
			if w.watchdog != nil {
				ws.WatchdogLeft = until(w.watchdogDue)
			}
			if w.ageTimer != nil {
				ws.AgeLeft = until(w.ageDue)
			}
		}
		if w.state == draining {
			ws.DrainLeft = *until(w.drainUntil)
			if w.slot.retired {
				ws.Index = -1 - w.slot.index // a retired slot's: not one of the slots
			}
		}
		st.Workers = append(st.Workers, ws)
	}
	for _, s := range m.sortedStrays() {
		ss := straySnapshot{PID: s.pid, Gen: s.key.gen, Index: s.key.index, Comm: s.comm, PGID: s.pgid, Hook: s.hook, Drained: s.drained}
		if s.kill != nil {
			ss.KillIn = until(s.killAt)
		}
		st.Strays = append(st.Strays, ss)
	}
	for k, at := range m.ended {
		st.Ended = append(st.Ended, endedSnapshot{Gen: k.gen, Index: k.index, At: at})
	}
	for _, a := range m.heals.waiting {
		st.Heals = append(st.Heals, healSnapshot{PID: a.w.pid, Trigger: a.why})
	}
	reload, stop := m.pending.take()
	m.pending.putBack(reload, stop) // kept, should the exec fail
	if q := m.queued; q != nil && reload == nil {
		// A reload that waited for the upgrade runs in the new image.
		t := q.trigger
		reload = &t
	}
	st.Pending = pendingSnapshot{Reload: reload, Stop: stop, Exits: m.pending.exits()}
	return &HandOver{Version: StateVersion, From: m.opts.Version, At: now, Mono: m.env.monotonic(), Engine: st, Host: hs, Files: files, Data: data}, nil
}

// Resume returns a Master that carries on, in a new image, from what its
// old image handed over in an in-place upgrade. opts are the new image's
// own (its flags, its sockets taken back from the caller's files).
func Resume(opts Options, ho *HandOver) (*Master, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	m := newMaster(opts, nil)
	m.handed = ho
	return m, nil
}

// restoreWorker files a worker handed over, serving or draining, in its
// slot (a retired slot's, with a negative index, outside the slots), and
// arms its timers for what left says they had left.
func (m *Master) restoreWorker(ws workerSnapshot, gens map[int]*generation, left func(time.Duration) time.Duration) {
	now := m.env.now()
	var s *slot
	if ws.Index >= 0 && ws.Index < len(m.slots) {
		s = m.slots[ws.Index]
	} else {
		index := ws.Index
		if index < 0 {
			index = -1 - index
		}
		s = &slot{index: index, gen: gens[ws.Gen], retired: true}
	}
	w := &worker{gen: gens[ws.Gen], slot: s, pid: ws.PID, trigger: ws.Trigger, started: ws.Started, readyAt: ws.ReadyAt,
		killed: ws.Killed, mainExit: ws.MainExit, watchdogEvery: ws.WatchdogEvery}
	w.status.text = ws.Status
	m.workers[w.pid] = w
	if ws.State != serving.String() {
		w.state = draining
		w.drainUntil = now.Add(left(ws.DrainLeft))
		if !w.killed {
			m.arm(w, left(ws.DrainLeft))
		}
		return
	}
	w.state = serving
	s.serving = w
	// Its timers go on from what they had left, rather than afresh: else
	// upgrades more often than --max-age or the watchdog interval would
	// keep a worker from ever being replaced for either.
	if ws.AgeLeft != nil {
		w.ageDue = now.Add(left(*ws.AgeLeft))
	}
	m.serves(w)
	if ws.WatchdogLeft != nil {
		m.armWatchdogIn(w, left(*ws.WatchdogLeft))
	}
}

// restore rebuilds the loop's state from ho, arms its timers afresh from
// what they had left, and carries out what was asked during the hand-over.
func (m *Master) restore(ho *HandOver) {
	st := ho.Engine
	now := m.env.now()
	elapsed := max(now.Sub(ho.At), 0)
	if ho.Mono > 0 {
		elapsed = max(m.env.monotonic()-ho.Mono, 0)
	}
	left := func(d time.Duration) time.Duration { return max(d-elapsed, 0) }
	m.started, m.lastGen, m.restarts, m.lastReload, m.lastSuccess = st.Started, st.LastGen, st.Restarts, st.LastReload, st.LastSuccess
	m.hooks.served = st.Served
	p := &m.heals.probe
	p.seen, p.ok, p.failures, p.heals, p.next = st.Probe.Seen, st.Probe.OK, st.Probe.Failures, st.Probe.Heals, st.Probe.Next
	if st.Probe.HealIn != nil {
		p.nextHeal = now.Add(left(*st.Probe.HealIn))
	}
	// The probe's and the memory check's timers go on from what they had
	// left, as a worker's do (below): armed first, so that nothing below
	// arms them afresh.
	if st.Probe.NextIn != nil && m.opts.Probe != "" {
		m.armProbeIn(left(*st.Probe.NextIn))
	}
	if st.MemoryIn != nil && m.opts.MaxMemory > 0 {
		m.armMemoryCheckIn(left(*st.MemoryIn))
	}
	m.upgraded = now
	gens := map[int]*generation{}
	for _, g := range st.Generations {
		gens[g.N] = &generation{n: g.N, release: g.Release}
	}
	m.current = gens[st.Current]
	for _, ss := range st.Slots {
		s := &slot{index: ss.Index, gen: gens[ss.Gen], crashes: ss.Crashes, restarts: ss.Restarts, healFails: ss.HealFails}
		m.slots = append(m.slots, s)
		if ss.RestartIn != nil {
			s.restartAt = now.Add(left(*ss.RestartIn))
			s.restartDue = m.env.after(left(*ss.RestartIn), restartDue{s})
		}
	}
	for i := len(m.slots); i < m.opts.Workers && len(st.Slots) == 0; i++ {
		m.slots = append(m.slots, &slot{index: i, gen: m.current})
	}
	for _, ws := range st.Workers {
		m.restoreWorker(ws, gens, left)
	}
	for _, ss := range st.Strays {
		s := &stray{pid: ss.PID, key: workerKey{ss.Gen, ss.Index}, comm: ss.Comm, pgid: ss.PGID, hook: ss.Hook, drained: ss.Drained}
		m.strays[s.pid] = s
		if ss.KillIn != nil {
			s.killAt = now.Add(left(*ss.KillIn))
			s.kill = m.env.after(left(*ss.KillIn), strayKill{s})
		}
	}
	for _, e := range st.Ended {
		m.ended[workerKey{e.Gen, e.Index}] = e.At
	}
	for i, ss := range st.Slots {
		if s := m.slots[i]; ss.RetryIn != nil && s.serving != nil {
			m.retryIn(s, ss.RetryWhy, left(*ss.RetryIn))
		}
	}
	for _, h := range st.Heals {
		if w := m.workers[h.PID]; w != nil {
			m.heals.waiting = append(m.heals.waiting, healAsk{w, h.Trigger})
		}
	}
	// Workers whose main process exited before the upgrade drain with
	// their group: watch it again. A worker that exited during the exec is
	// a zombie the reaper reports; one of another's group, already gone,
	// ends here.
	for _, w := range m.sortedWorkers() {
		if w.mainExit != "" {
			if left := m.env.mainExited(w.pid, true); len(left) == 0 {
				m.workerEnded(w, w.mainExit)
			}
		}
	}
	m.armMemoryCheck()
	m.armProbe()
	m.log.Info().Str("event", "upgraded").Str("from", ho.From).Str("to", m.opts.Version).
		Int("workers", len(m.workers)).Str("took", elapsed.Round(time.Microsecond).String()).
		Msg("upgraded in place: the new image carries on")
	if m.servingCount() > 0 {
		m.env.tellService(host.ServiceState{Ready: true, Status: m.servingStatus()})
	}
	for _, e := range st.Pending.Exits {
		m.reaped(e.PID, e.Status)
	}
	if st.Pending.Reload != nil {
		m.beginReload(*st.Pending.Reload, nil)
	}
	if st.Pending.Stop > 0 {
		m.requestStop(st.Pending.Stop == 2)
	}
	m.applyPending()
}
