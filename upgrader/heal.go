package upgrader

import (
	"fmt"
	"syscall"
	"time"
)

// Self-healing replaces a serving worker that is wedged (Watchdog), too
// big (MaxMemory), too old (MaxAge) or failing its probe (Probe) the way
// a reload replaces it: a fresh worker of the slot's generation starts,
// and the old one is drained only once the fresh one is ready (and through
// its probation). A failed replacement keeps the old worker serving and is
// tried again with the crash backoff. At most one such replacement runs at
// a time; others wait their turn, as they wait for a reload under way,
// after which those whose worker still serves run.

// healing is the loop's self-healing state. Which slot is being replaced
// is not kept here but read from the slots (healingSlot): a slot that is
// retired, or whose replacement a reload supersedes, cannot leave a
// replacement marked as under way that nothing will end.
type healing struct {
	waiting []healAsk // in the order asked
	memTick func()    // the MaxMemory check's timer
	memAt   time.Time
	probe   probeState // see probe.go
}

// healAsk is a replacement waiting its turn.
type healAsk struct {
	w   *worker
	why Trigger
}

// heal asks for w to be replaced, saying why. While a reload moves slots
// or another replacement runs, the ask waits its turn: a reload that
// replaces w makes it moot, and one that fails leaves w serving, still
// wedged, too big or too old.
func (m *Master) heal(w *worker, why Trigger, detail string) {
	s := w.slot
	switch {
	case m.stopping || s.retired || s.serving != w || m.healingSlot() == s:
		return // gone, stopping, or being replaced already
	case m.healBlocked():
		for _, a := range m.heals.waiting {
			if a.w == w {
				return
			}
		}
		m.heals.waiting = append(m.heals.waiting, healAsk{w, why})
		m.log.Info().Str("event", "replacement_waits").Stringer("trigger", why).Int("gen", w.gen.n).Int("index", s.index).
			Int("pid", w.pid).Str("why", detail).Msg("worker to be replaced: waits for the reload or replacement under way")
		return
	case s.incoming != nil:
		return
	}
	m.log.Warn().Str("event", "replacing").Stringer("trigger", why).Int("gen", w.gen.n).Int("index", s.index).
		Int("pid", w.pid).Str("why", detail).Msg("replacing a serving worker: a fresh one starts, and this one drains once it is ready")
	m.cancelRetry(s)
	m.replace(s, why)
}

// healBlocked reports whether a replacement must wait: one runs, or a
// reload still moves slots.
func (m *Master) healBlocked() bool {
	return m.healingSlot() != nil || (m.rollout != nil && !m.rollout.rolled())
}

// heals reports whether t is a self-healing replacement's trigger.
func (t Trigger) heals() bool {
	return t == TriggerWatchdog || t == TriggerProbe || t == TriggerMemory || t == TriggerAge
}

// healingSlot is the slot whose serving worker a self-healing replacement
// is replacing, nil if none is.
func (m *Master) healingSlot() *slot {
	for _, s := range m.slots {
		if s.replacing != nil && s.replacing.trigger.heals() {
			return s
		}
	}
	return nil
}

// nextHeal starts the replacement waiting its turn, if none runs: call it
// whenever one may have ended.
func (m *Master) nextHeal() {
	if m.stopping || m.healBlocked() {
		return
	}
	for len(m.heals.waiting) > 0 {
		a := m.heals.waiting[0]
		m.heals.waiting = m.heals.waiting[1:]
		if a.w.slot.serving == a.w {
			m.heal(a.w, a.why, "its turn came")
			return
		}
	}
}

// healFailed keeps s's serving worker after its replacement failed, and
// tries again with the crash backoff.
func (m *Master) healFailed(s *slot, why Trigger, err error) {
	defer m.nextHeal()
	if m.stopping || s.retired || s.serving == nil {
		return
	}
	s.healFails++
	delay := m.backoff(s.healFails)
	old := s.serving
	m.log.Warn().Str("event", "replacement_failed").Stringer("trigger", why).Err(err).Int("gen", old.gen.n).
		Int("index", s.index).Int("pid", old.pid).Str("retry_in", delay.String()).
		Msg("the fresh worker did not take over: the old one serves on")
	m.cancelRetry(s)
	m.retryIn(s, why, delay)
}

// retryIn arms the next attempt to replace s's serving worker, d from now.
func (m *Master) retryIn(s *slot, why Trigger, d time.Duration) {
	s.retryAt, s.retryWhy = m.env.now().Add(d), why
	s.healRetry = m.env.after(d, healRetry{s.serving, why})
}

func (m *Master) cancelRetry(s *slot) { cancel(&s.healRetry) }

// serves arms the self-healing timers of a worker that has just taken
// over its slot. The age timer counts from then; a worker handed over
// by an in-place upgrade keeps the age due time it had (see restore).
func (m *Master) serves(w *worker) {
	if m.opts.Watchdog > 0 && w.watchdogEvery == 0 {
		w.watchdogEvery = m.opts.Watchdog
	}
	m.armWatchdog(w)
	if m.opts.MaxAge > 0 {
		if w.ageDue.IsZero() {
			// A spread of up to a tenth, fixed by the PID, so that workers
			// started together do not all recycle together.
			spread := time.Duration(float64(m.opts.MaxAge/10) * float64((w.pid*2654435761)%1000) / 1000)
			w.ageDue = m.env.now().Add(m.opts.MaxAge - m.opts.MaxAge/20 + spread)
		}
		w.ageTimer = m.env.after(max(w.ageDue.Sub(m.env.now()), 0), ageReached{w})
	}
	m.armMemoryCheck()
}

// unserve stops w's self-healing timers: it no longer serves.
func (m *Master) unserve(w *worker) {
	cancel(&w.watchdog)
	cancel(&w.ageTimer)
}

// armWatchdog sets w's watchdog deadline afresh.
func (m *Master) armWatchdog(w *worker) { m.armWatchdogIn(w, w.watchdogEvery) }

// armWatchdogIn sets w's watchdog deadline d from now.
func (m *Master) armWatchdogIn(w *worker, d time.Duration) {
	cancel(&w.watchdog)
	w.watchdogDue = time.Time{}
	if w.watchdogEvery > 0 && (w.state == serving || w.state == probation || w.state == held) {
		w.watchdogSeq++
		w.watchdogDue = m.env.now().Add(max(d, 0))
		w.watchdog = m.env.after(max(d, 0), watchdogExpired{w, w.watchdogSeq})
	}
}

// watchdogLate is how late the loop may see a watchdog deadline before
// it concludes that baton itself was not running when the deadline
// passed (SIGSTOPped, its cgroup frozen by `podman pause` or `docker
// pause`): a timer is otherwise seen within milliseconds.
const watchdogLate = time.Second

// watchdogExpired replaces w, silent for its whole watchdog interval,
// unless baton was not running itself when the deadline passed: it could
// not hear a WATCHDOG=1 then (and a frozen worker sent none), so the
// silence proves nothing, and w gets a fresh interval instead. Once only
// until w pings again: a master starved of CPU, or paused again and
// again, sees every deadline late, and a wedged worker would otherwise
// never be replaced while that lasts; a working one, which ran during
// the fresh interval, has pinged by its end.
func (m *Master) watchdogExpired(w *worker) {
	if late := m.env.now().Sub(w.watchdogDue); late > watchdogLate && !w.watchdogDeferred {
		w.watchdogDeferred = true
		m.log.Warn().Str("event", "watchdog_deferred").Int("gen", w.gen.n).Int("index", w.slot.index).Int("pid", w.pid).
			Str("late", late.Round(time.Millisecond).String()).
			Msg("the worker's watchdog deadline passed while baton itself was not running: it gets a fresh interval")
		m.armWatchdog(w)
		return
	}
	m.heal(w, TriggerWatchdog, fmt.Sprintf("no WATCHDOG=1 for %s", w.watchdogEvery))
}

// watchdogNotice handles WATCHDOG=… and WATCHDOG_USEC=… from w.
func (m *Master) watchdogNotice(w *worker, ping, usec string) {
	if usec != "" {
		var n int64
		if _, err := fmt.Sscan(usec, &n); err == nil && n >= 0 {
			w.watchdogEvery = time.Duration(n) * time.Microsecond
			m.log.Info().Str("event", "watchdog_changed").Int("gen", w.gen.n).Int("index", w.slot.index).Int("pid", w.pid).
				Str("watchdog", w.watchdogEvery.String()).Msg("worker set its own watchdog interval")
		}
	}
	switch ping {
	case "1":
		w.watchdogDeferred = false
		m.armWatchdog(w)
	case "trigger":
		m.heal(w, TriggerWatchdog, "it sent WATCHDOG=trigger")
		return
	}
	if usec != "" && ping != "1" {
		m.armWatchdog(w)
	}
}

// armMemoryCheck makes sure the MaxMemory check runs while workers serve.
func (m *Master) armMemoryCheck() {
	if m.opts.MaxMemory > 0 && m.heals.memTick == nil && !m.stopping {
		m.armMemoryCheckIn(memoryEvery)
	}
}

// armMemoryCheckIn arms the next MaxMemory check d from now.
func (m *Master) armMemoryCheckIn(d time.Duration) {
	m.heals.memAt = m.env.now().Add(d)
	m.heals.memTick = m.env.after(d, memoryCheck{})
}

// memoryEvery is how often serving workers' memory is measured with
// MaxMemory: a few reads of /proc per worker.
const memoryEvery = time.Second

func (m *Master) checkMemory() {
	m.heals.memTick = nil
	if m.stopping {
		return
	}
	for _, s := range m.slots {
		w := s.serving
		if w == nil || s.incoming != nil {
			continue
		}
		rss, err := m.env.memory(w.pid)
		if err == nil && rss > m.opts.MaxMemory {
			m.heal(w, TriggerMemory, fmt.Sprintf("its processes use %d MB, over --max-memory %d MB", rss>>20, m.opts.MaxMemory>>20))
		}
	}
	m.armMemoryCheck()
}

// stopHealing ends every self-healing timer and replacement: the master
// stops.
func (m *Master) stopHealing() {
	cancel(&m.heals.memTick)
	cancel(&m.heals.probe.tick)
	for _, s := range m.slots {
		m.cancelRetry(s)
	}
	m.heals.waiting = nil
}

// capDraining kills the oldest draining generation early when more than
// MaxDraining drain.
func (m *Master) capDraining() {
	if m.opts.MaxDraining < 0 {
		return
	}
	gens := map[int][]*worker{}
	oldest := 0
	for _, w := range m.workers {
		if w.state == draining && !w.killed {
			gens[w.gen.n] = append(gens[w.gen.n], w)
			if oldest == 0 || w.gen.n < oldest {
				oldest = w.gen.n
			}
		}
	}
	if len(gens) <= m.opts.MaxDraining {
		return
	}
	now := m.env.now()
	for _, w := range gens[oldest] {
		left := w.drainUntil.Sub(now).Round(time.Millisecond)
		m.log.Warn().Str("event", "drain_cut").Int("gen", w.gen.n).Int("index", w.slot.index).Int("pid", w.pid).
			Int("draining_generations", len(gens)).Str("cut_short_by", left.String()).
			Msgf("more than --max-draining %d generations drain: killing the oldest, %s before its drain timeout", m.opts.MaxDraining, left)
		m.disarm(w)
		w.killed = true
		m.env.signal(w.pid, syscall.SIGKILL, true)
	}
}
