package upgrader

import "time"

// replacement is one slot's worker replaced outside a rollout: a restart
// after a crash, a slot added by a scale-up, or (self-healing) a fresh
// worker for a serving one. It runs the slot's generation.
type replacement struct {
	trigger Trigger
	started time.Time
}

// replace starts a fresh worker of s's generation for s.
func (m *Master) replace(s *slot, why Trigger) {
	s.replacing = &replacement{trigger: why, started: m.env.now()}
	m.emit(Event{Kind: ReloadStarted, Generation: s.gen.n, Index: s.index, Trigger: why}, m.log.Info())
	if _, err := m.startWorker(s, s.gen, why); err != nil {
		m.replaceFailed(s, nil, err)
	}
}

// replaced ends s's replacement: w took over.
func (m *Master) replaced(s *slot, w *worker, wasDown bool) {
	rep := s.replacing
	s.replacing = nil
	if rep == nil {
		return
	}
	if rep.trigger.heals() {
		s.healFails = 0
		defer m.nextHeal()
	}
	m.env.tookOver(w.pid)
	m.lastSuccess = m.env.now()
	took := m.env.now().Sub(rep.started)
	res := Result{Generation: w.gen.n, Took: took, Trigger: rep.trigger}
	m.lastReload = newReloadStatus(rep.started, res)
	m.emit(Event{Kind: ReloadComplete, Generation: w.gen.n, Index: s.index, Took: took, Trigger: rep.trigger}, m.log.Info())
	if wasDown {
		// The service was down and serves again: register it again.
		m.runHook(hookOnReady, w.gen)
	}
	m.scaleProgress()
}

// replaceFailed ends s's replacement, whose worker w (nil if it never
// started) will not take over. A slot with nothing serving is restarted
// with backoff, as after a crash.
func (m *Master) replaceFailed(s *slot, w *worker, why error) {
	rep := s.replacing
	s.replacing = nil
	if rep != nil {
		res := Result{Generation: m.currentGen(), Took: m.env.now().Sub(rep.started), Trigger: rep.trigger, Err: why}
		m.lastReload = newReloadStatus(rep.started, res)
		m.emit(Event{Kind: ReloadFailed, Generation: s.gen.n, Index: s.index, Took: res.Took, Trigger: rep.trigger, Err: why},
			m.log.Error().Err(why))
		if rep.trigger == TriggerScale {
			m.answerScale(why)
		}
	}
	if rep != nil && rep.trigger.heals() {
		if !s.empty() {
			m.healFailed(s, rep.trigger, why)
			return
		}
		// The worker it was to replace died meanwhile: nothing serves
		// to keep, and the slot restarts below.
		defer m.nextHeal()
	}
	if s.empty() {
		var readyAt time.Time
		if w != nil {
			readyAt = w.readyAt
		}
		m.crashed(s, readyAt, why)
	}
}

// cancelReplacement ends s's replacement, if any, for a rollout that
// takes the slot over: its incoming worker drains. A self-healing one
// waits again, first in line: should the rollout fail before it moves s,
// the worker it replaced still needs replacing.
func (m *Master) cancelReplacement(s *slot) {
	m.cancelRestart(s)
	m.cancelRetry(s)
	if rep := s.replacing; rep != nil && rep.trigger.heals() && s.serving != nil {
		m.heals.waiting = append([]healAsk{{s.serving, rep.trigger}}, m.heals.waiting...)
	}
	if w := s.incoming; w != nil {
		s.incoming = nil
		m.log.Info().Str("event", "replacement_superseded").Int("gen", w.gen.n).Int("index", s.index).Int("pid", w.pid).
			Msg("a reload supersedes the replacement of this worker")
		m.drain(w)
	}
	s.replacing = nil
}

// crashed schedules a restart of slot s after its worker died with
// nothing else serving it, backing off exponentially, or gives up past
// RestartLimit.
func (m *Master) crashed(s *slot, readyAt time.Time, why error) {
	if !readyAt.IsZero() && m.env.now().Sub(readyAt) >= StableAfter {
		s.crashes = 0
	}
	s.crashes++
	if m.opts.RestartLimit >= 0 && s.crashes > m.opts.RestartLimit {
		m.exitErr = &CrashLoopError{Crashes: s.crashes, Last: why}
		m.log.Error().Str("event", "crash_loop").Err(why).Int("index", s.index).Int("crashes", s.crashes).
			Msg("worker keeps crashing: giving up")
		m.stop(false)
		return
	}
	delay := m.backoff(s.crashes)
	m.log.Warn().Str("event", "worker_crashed").Err(why).Int("index", s.index).Int("crashes", s.crashes).
		Str("restart_in", delay.String()).Msg("worker crashed: restarting")
	m.cancelRestart(s)
	s.restartAt = m.env.now().Add(delay)
	s.restartDue = m.env.after(delay, restartDue{s})
}

// backoff is the delay before the nth attempt after a failure in a row
// (a crash restart, a replacement retried, a probe's next replacement):
// RestartBackoff doubled each time, at most RestartBackoffMax.
func (m *Master) backoff(n int) time.Duration {
	d := m.opts.RestartBackoff << (n - 1)
	if d > m.opts.RestartBackoffMax || d <= 0 {
		d = m.opts.RestartBackoffMax
	}
	return d
}

// restartSlot restarts s once its backoff has passed.
func (m *Master) restartSlot(s *slot) {
	s.restartDue = nil
	if m.stopping || s.retired || !s.empty() || s.incoming != nil {
		return
	}
	m.restarts++
	s.restarts++
	m.replace(s, TriggerCrash)
}

func (m *Master) cancelRestart(s *slot) { cancel(&s.restartDue) }
