package upgrader

import "time"

// The probe (Options.Probe) asks the service itself, through its own
// address, whether it answers correctly: "ready" only says that a worker
// said READY=1 or waits in accept. It runs one request at a time, off the
// loop (env.probe), and never while nothing serves.
//
// While workers of a rollout are on probation it probes every
// probeDuringProbation: the old workers still serve and were answering,
// so a failure is the new release's, and the rollout fails and moves back
// — unless the service was failing its probe before the reload began
// (the reload may be the fix), which the log says. The rest of the time
// it probes every ProbeInterval, and ProbeFailures failures in a row
// replace a serving worker (slot by slot, in turn), backing off like a
// crash when replacing does not help.
type probeState struct {
	tick     func() // the next probe's timer
	tickAt   time.Time
	inFlight bool
	seen     bool // a probe has answered
	ok       bool // the last one passed
	failures int  // in a row
	heals    int  // probe replacements in a row without a passing probe since
	nextHeal time.Time
	next     int  // the slot to replace next
	excused  bool // the no-veto line was logged for the rollout under way
}

// probeDuringProbation is how often the probe runs while new workers are
// on probation.
const probeDuringProbation = 100 * time.Millisecond

// onProbation reports whether a worker of the rollout under way is on
// probation.
func (m *Master) onProbation() bool {
	if r := m.rollout; r != nil {
		for _, mv := range r.batch {
			if mv.w != nil && mv.w.state == probation {
				return true
			}
		}
	}
	return false
}

// armProbe schedules the next probe, if one is due and none is.
func (m *Master) armProbe() {
	p := &m.heals.probe
	if m.opts.Probe == "" || m.stopping || p.inFlight || m.servingCount() == 0 {
		return
	}
	every := m.opts.ProbeInterval
	if m.onProbation() {
		every = probeDuringProbation
		cancel(&p.tick) // sooner than the one armed
	}
	if p.tick == nil {
		m.armProbeIn(every)
	}
}

// armProbeIn arms the next probe d from now.
func (m *Master) armProbeIn(d time.Duration) {
	p := &m.heals.probe
	p.tickAt = m.env.now().Add(d)
	p.tick = m.env.after(d, probeTick{})
}

func (m *Master) probeNow() {
	p := &m.heals.probe
	p.tick = nil
	if m.stopping || m.servingCount() == 0 {
		return
	}
	p.inFlight = true
	m.env.probe(m.opts.Probe)
}

// probed handles a probe's answer.
func (m *Master) probed(ok bool, detail string) {
	p := &m.heals.probe
	p.inFlight = false
	p.seen, p.ok = true, ok
	defer m.armProbe()
	if ok {
		p.failures, p.heals = 0, 0
		return
	}
	p.failures++
	if r := m.rollout; r != nil && m.onProbation() {
		if r.probeFailedBefore {
			if !p.excused {
				p.excused = true
				m.log.Warn().Str("event", "probe_no_veto").Str("probe", m.opts.Probe).Str("why", detail).
					Msg("the probe fails during probation, but it was failing before the reload: it does not veto it")
			}
			return
		}
		m.rolloutFailed(r, errProbe(detail))
		return
	}
	if p.failures < m.opts.ProbeFailures || m.env.now().Before(p.nextHeal) || len(m.slots) == 0 {
		return
	}
	s := m.slots[p.next%len(m.slots)]
	p.next++
	if s.serving == nil {
		return
	}
	p.failures = 0
	p.heals++
	p.nextHeal = m.env.now().Add(m.backoff(p.heals))
	m.heal(s.serving, TriggerProbe, detail)
}

type probeError string

func (e probeError) Error() string { return "probe failed: " + string(e) }

func errProbe(detail string) error { return probeError(detail) }
