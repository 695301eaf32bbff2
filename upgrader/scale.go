package upgrader

import "errors"

// scale handles a request to change the number of workers. New slots
// start workers of the serving generation at once; removed slots, the
// highest, drain theirs. A scale asked for during a reload applies once
// the reload has ended (the last one asked for wins).
func (m *Master) scale(e scaleReq) {
	base := len(m.slots)
	if m.scaling != nil {
		base = m.scaling.n
	}
	n := e.n
	if n == 0 {
		n = base + e.delta
	}
	switch {
	case n < 1:
		m.log.Warn().Str("event", "scale_refused").Int("workers", base).Msg("cannot scale below one worker")
		if e.reply != nil {
			e.reply <- Result{Generation: m.currentGen(), Trigger: TriggerScale, Err: errors.New("the worker count must be at least 1")}
		}
		return
	case n > MaxWorkers:
		m.log.Warn().Str("event", "scale_refused").Int("workers", base).Msgf("cannot scale beyond %d workers", MaxWorkers)
		if e.reply != nil {
			e.reply <- Result{Generation: m.currentGen(), Trigger: TriggerScale, Err: CheckWorkers(n)}
		}
		return
	case m.stopping:
		if e.reply != nil {
			e.reply <- Result{Generation: m.currentGen(), Trigger: TriggerScale, Err: ErrStopping}
		}
		return
	}
	if e.reply != nil {
		m.scaleWaiters = append(m.scaleWaiters, e.reply)
	}
	m.scaling = &scaleReq{n: n}
	if m.rollout != nil {
		m.log.Info().Str("event", "scale_queued").Int("workers", n).Int("gen", m.rollout.gen()).
			Msg("scale requested during a reload: applied after it")
		return
	}
	m.applyScale()
}

// applyScale moves to the worker count asked for, if any.
func (m *Master) applyScale() {
	if m.scaling == nil || m.stopping || m.rollout != nil {
		return
	}
	n := m.scaling.n
	m.scaling = nil
	from := len(m.slots)
	if n != from {
		m.log.Info().Str("event", "scale").Int("from", from).Int("to", n).Msg("scaling")
	}
	// Every new slot first, then their workers: each is told the new
	// count (BATON_WORKERS), not the count so far.
	for i := from; i < n; i++ {
		m.slots = append(m.slots, &slot{index: i, gen: m.current})
	}
	for _, s := range m.slots[from:] {
		m.replace(s, TriggerScale)
	}
	for i := len(m.slots) - 1; i >= n; i-- {
		m.retire(m.slots[i])
	}
	m.slots = m.slots[:min(n, len(m.slots))]
	m.nextHeal() // a retired slot's replacement may have ended
	m.scaleProgress()
}

// retire drains what slot s runs; it is being removed.
// A self-healing replacement of it ends with it (see applyScale).
func (m *Master) retire(s *slot) {
	s.retired = true
	m.cancelRestart(s)
	m.cancelRetry(s)
	s.replacing = nil
	in, old := s.incoming, s.serving
	s.incoming, s.serving = nil, nil
	for _, w := range []*worker{in, old} {
		if w != nil {
			m.drain(w)
		}
	}
}

// scaleProgress answers those waiting for a scale once every slot serves.
func (m *Master) scaleProgress() {
	if len(m.scaleWaiters) == 0 || m.scaling != nil || m.rollout != nil {
		return
	}
	for _, s := range m.slots {
		if s.empty() || s.incoming != nil {
			return
		}
	}
	m.answerScale(nil)
}

// answerScale answers everyone waiting for a scale.
func (m *Master) answerScale(err error) {
	for _, c := range m.scaleWaiters {
		c <- Result{Generation: m.currentGen(), Trigger: TriggerScale, Err: err}
	}
	m.scaleWaiters = nil
}
