package upgrader

// A requested graceful stop (Stop: TERM, INT, POST /-/quit) begins with a
// stop delay when Options.StopDelay or Options.OnStopping is set:
//
//	stop requested ──▶ stop delay ──StopDelay passed and on-stopping ended──▶ drain ──▶ exit
//
// From its first moment the master is stopping: it no longer claims
// readiness (Status.Stopping, the admin /-/ready, STOPPING=1 to its own
// service manager), starts nothing, and runs the on-stopping hook. The
// serving generation (and one on probation) keeps serving through the
// delay, so that load balancers, Kubernetes Services and registries stop
// sending traffic before the drain begins; a generation still starting is
// drained at once, as nobody sends it traffic yet. A second Stop ends the
// delay at once, StopNow kills everything at once, and a stop the master
// decides itself (crash loop, first generation never ready) has no delay.

// stopDelay is the loop's state during a stop delay.
type stopDelay struct {
	active bool
	passed bool   // StopDelay has passed
	cancel func() // its timer
}

// stopDelayOver is the end of Options.StopDelay.
type stopDelayOver struct{}

// requestStop handles Stop and StopNow.
func (m *Master) requestStop(fast bool) {
	switch {
	case m.delay.active && !fast:
		m.log.Info().Msg("stop requested again: skipping the rest of the stop delay")
		m.stop(false)
	case fast || m.stopping || (m.opts.StopDelay == 0 && len(m.opts.OnStopping) == 0):
		m.stop(fast)
	default:
		m.beginStopDelay()
	}
}

func (m *Master) beginStopDelay() {
	m.stopping = true
	m.delay = stopDelay{active: true, passed: m.opts.StopDelay == 0}
	m.emit(Event{Kind: Stopping}, m.log.Info().Bool("fast", false).Int("workers", len(m.live)).
		Str("stop_delay", m.opts.StopDelay.String()))
	m.abandonReloads()
	for _, g := range m.live {
		switch g.state {
		case starting:
			m.drain(g)
		case probation:
			m.disarm(g) // it serves on until the drain
		}
	}
	if m.hooks.served {
		m.runHook(hookOnStopping, m.current)
	}
	if !m.delay.passed {
		m.log.Info().Str("stop_delay", m.opts.StopDelay.String()).Int("gen", m.currentGen()).
			Msg("not ready any more; every generation keeps serving for --stop-delay before the drain")
		m.delay.cancel = m.env.after(m.opts.StopDelay, stopDelayOver{})
	}
	m.endStopDelayIfDone()
}

func (m *Master) stopDelayOver() {
	if !m.delay.active {
		return
	}
	m.delay.passed, m.delay.cancel = true, nil
	m.endStopDelayIfDone()
}

// stopHookEnded is called when an on-stopping hook has ended.
func (m *Master) stopHookEnded() { m.endStopDelayIfDone() }

// endStopDelayIfDone drains once the delay has passed and the on-stopping
// hook has ended.
func (m *Master) endStopDelayIfDone() {
	if m.delay.active && m.delay.passed && !m.stoppingHookBusy() {
		m.stop(false)
	}
}

// cancelStopDelay ends the stop delay, if one runs.
func (m *Master) cancelStopDelay() {
	if m.delay.cancel != nil {
		m.delay.cancel()
	}
	m.delay = stopDelay{}
}
