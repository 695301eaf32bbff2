package upgrader

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/baton-sh/baton/internal/host"
)

// startWorker starts a worker of gen for slot s, as its incoming worker.
func (m *Master) startWorker(s *slot, gen *generation, why Trigger) (*worker, error) {
	pid, err := m.env.start(host.Start{
		Generation: gen.n, Index: s.index, Workers: len(m.slots), Release: gen.release,
	})
	if err != nil {
		return nil, fmt.Errorf("cannot start generation %d (worker %d): %w", gen.n, s.index, err)
	}
	w := &worker{gen: gen, slot: s, pid: pid, state: starting, trigger: why, started: m.env.now()}
	m.workers[pid] = w
	s.incoming = w
	if m.opts.Ready == ReadyDelay {
		m.arm(w, m.opts.ReadyDelay)
	} else {
		w.deadline = w.started.Add(m.opts.ReadyTimeout)
		m.arm(w, m.opts.ReadyTimeout)
	}
	m.env.after(waitEvery, waitTick{w})
	m.emit(Event{Kind: WorkerStarted, Generation: gen.n, PID: pid, Index: s.index}, m.log.Info())
	return w, nil
}

// arm sets w's one timer for its current state.
func (m *Master) arm(w *worker, d time.Duration) {
	cancel(&w.timer)
	w.timer = m.env.after(d, workerTimer{w, w.state})
}

func (m *Master) disarm(w *worker) { cancel(&w.timer) }

// cancel stops the timer *stop cancels, if one is armed, and forgets it.
func cancel(stop *func()) {
	if *stop != nil {
		(*stop)()
		*stop = nil
	}
}

func (m *Master) timerFired(w *worker) {
	w.timer = nil
	switch w.state {
	case starting:
		if m.opts.Ready == ReadyDelay {
			m.ready(w, "alive after --ready delay")
			return
		}
		// It may already be answering requests: drain it like any old
		// worker rather than cut them.
		m.drain(w)
		m.incomingFailed(w, fmt.Errorf("new worker (%s) was not ready after %s (--ready-timeout) and was told to drain: %s",
			m.who(w), m.opts.ReadyTimeout, m.waitingFor()))
	case probation:
		m.promotable(w)
	case draining:
		w.killed = true
		msg := "worker still running after the drain timeout: sending SIGKILL to it and its process group"
		if w.mainExit != "" {
			msg = "processes of the worker's process group still running after the drain timeout (its main process has exited): sending them SIGKILL"
		}
		m.log.Warn().Str("event", "drain_timeout").Int("gen", w.gen.n).Int("index", w.slot.index).Int("pid", w.pid).
			Str("drain_timeout", m.opts.DrainTimeout.String()).Msg(msg)
		m.env.signal(w.pid, syscall.SIGKILL, true)
	}
}

// ready handles a worker's word, by whatever channel, that it serves.
func (m *Master) ready(w *worker, how string) {
	if w.state != starting {
		return
	}
	w.readyAt = m.env.now()
	m.env.settled(w.pid)
	m.emit(Event{Kind: WorkerReady, Generation: w.gen.n, PID: w.pid, Index: w.slot.index, Took: w.readyAt.Sub(w.started)},
		m.log.Info().Str("how", how))
	if m.opts.MinReady > 0 && !w.slot.empty() {
		w.state = probation
		m.arm(w, m.opts.MinReady)
		m.armWatchdog(w)
		m.armProbe()
		m.log.Info().Str("event", "probation").Int("gen", w.gen.n).Int("index", w.slot.index).Int("pid", w.pid).
			Str("min_ready", m.opts.MinReady.String()).Int("serving", w.slot.serving.gen.n).
			Msg("both workers serve until the new one has stayed up for --min-ready")
		return
	}
	m.promotable(w)
}

// promotable handles a worker that is ready and through its probation:
// it takes over its slot now, or once the rest of its rollout batch is
// ready too.
func (m *Master) promotable(w *worker) {
	m.disarm(w)
	w.state = held
	if r := m.rollout; r != nil && r.moving(w) != nil {
		if w.slot.empty() {
			m.takeOver(w) // nothing to replace: no reason to wait
			m.advance(r)
			return
		}
		m.batchReady(r)
		return
	}
	m.takeOver(w)
}

// takeOver makes w its slot's serving worker and drains the one it
// replaces.
func (m *Master) takeOver(w *worker) {
	s := w.slot
	m.disarm(w)
	old := s.serving
	wasDown := m.servingCount() == 0
	s.serving, s.incoming, s.gen = w, nil, w.gen
	w.state = serving
	m.serves(w)
	if old != nil {
		m.drain(old)
	}
	if r := m.rollout; r != nil {
		if mv := r.moving(w); mv != nil {
			mv.done = true
			r.drop(mv)
			if old != nil {
				r.old[old] = true
			}
			return
		}
	}
	// A replacement of this slot alone (a crash restart, self-healing).
	m.replaced(s, w, wasDown)
}

func (m *Master) drain(w *worker) {
	m.env.settled(w.pid)
	m.unserve(w)
	w.state = draining
	w.drainUntil = m.env.now().Add(m.opts.DrainTimeout)
	m.arm(w, m.opts.DrainTimeout)
	defer m.capDraining()
	m.emit(Event{Kind: Draining, Generation: w.gen.n, PID: w.pid, Index: w.slot.index},
		m.log.Info().Str("signal", host.SignalName(m.opts.DrainSignal)).Bool("group", m.opts.DrainGroup))
	if err := m.tellToDrain(w.pid, m.opts.DrainGroup); err != nil && !errors.Is(err, syscall.ESRCH) {
		m.log.Error().Str("event", "drain_signal_failed").Err(err).Int("gen", w.gen.n).Int("pid", w.pid).Msg("cannot signal worker to drain")
	}
}

// tellToDrain sends the drain signal to pid (its process group if group),
// then SIGCONT, as systemd does after its stop signal: a stopped process
// (SIGSTOP, a TTIN sent to a whole unit, a debugger) would act on the
// drain signal only when SIGKILLed at the drain timeout, losing its
// requests in flight. The drain signal's error is returned.
func (m *Master) tellToDrain(pid int, group bool) error {
	err := m.env.signal(pid, m.opts.DrainSignal, group)
	m.env.signal(pid, syscall.SIGCONT, group)
	return err
}

// reaped handles a reaped child: first the processes its end handed to
// the master, then the child itself, a worker, a stray, or an orphan.
func (m *Master) reaped(pid int, status syscall.WaitStatus) {
	m.adopt()
	how := host.DescribeExit(status)
	w := m.workers[pid]
	switch {
	case w != nil:
		m.mainExited(w, how)
	case m.strays[pid] != nil:
		m.strayExited(m.strays[pid], how)
	default:
		m.log.Debug().Str("event", "orphan_reaped").Int("pid", pid).Str("how", how).Msg("reaped orphan")
	}
}

// mainExited handles the end of w's main process.
func (m *Master) mainExited(w *worker, how string) {
	key := workerKey{w.gen.n, w.slot.index}
	m.ended[key] = m.env.now()
	keep := w.state == draining && !w.killed
	defer func() {
		if left := m.daemonized(w); left != "" {
			m.log.Warn().Str("event", "worker_daemonized").Int("gen", w.gen.n).Int("index", w.slot.index).Int("pid", w.pid).
				Msgf("the worker daemonized: %s of generation %d was left running after its main process exited; run the server in the foreground", left, w.gen.n)
		}
		m.judgeStrays(key)
	}()
	left := m.env.mainExited(w.pid, keep)
	if len(left) > 0 && keep {
		// The rest of its group still finishes its requests (a shell
		// wrapper under --drain-group, a server whose children drain on
		// their own): the worker ends with its group, or at its drain
		// timeout. Only the main process was told to drain unless
		// --drain-group: the others hear it now, rather than hold the
		// drain until SIGKILL.
		w.mainExit = how
		if !m.opts.DrainGroup {
			m.tellToDrain(w.pid, true)
		}
		m.log.Info().Str("event", "main_exited").Int("gen", w.gen.n).Int("index", w.slot.index).Int("pid", w.pid).
			Str("how", how).Strs("left", left).Msg("worker's main process exited; the rest of its process group drains")
		return
	}
	if len(left) > 0 {
		m.log.Warn().Str("event", "group_killed").Int("gen", w.gen.n).Int("pid", w.pid).Strs("processes", left).
			Msg("sent SIGKILL to processes the worker left in its process group after its main process exited: if the worker is a shell script, exec the server (exec ./server) or pass --drain-group so that they get the drain signal too")
	}
	m.workerEnded(w, how)
}

// groupEmptied ends a draining worker whose main process had exited once
// the rest of its process group is gone.
func (m *Master) groupEmptied(pid int) {
	if w := m.workers[pid]; w != nil && w.mainExit != "" {
		m.workerEnded(w, w.mainExit)
	}
}

// workerEnded handles the end of worker w, process group and all.
func (m *Master) workerEnded(w *worker, how string) {
	delete(m.workers, w.pid)
	m.disarm(w)
	m.unserve(w)
	m.env.forget(w.pid)
	s := w.slot
	ran := m.env.now().Sub(w.started)
	m.emit(Event{Kind: WorkerExited, Generation: w.gen.n, PID: w.pid, Index: s.index},
		m.log.Info().Str("how", how).Str("ran", ran.Round(time.Millisecond).String()).Stringer("state", w.state))

	switch {
	case s.incoming == w:
		why := fmt.Errorf("new worker (%s) %s before it was ready", m.who(w), how)
		if left := m.daemonized(w); left != "" {
			why = fmt.Errorf("new worker (%s) daemonized: it %s before it was ready and left %s running; run the server in the foreground", m.who(w), how, left)
		} else if w.state == probation || w.state == held {
			why = fmt.Errorf("new worker (%s) %s %s after it was ready, within --min-ready %s",
				m.who(w), how, m.env.now().Sub(w.readyAt).Round(time.Millisecond), m.opts.MinReady)
		}
		m.incomingFailed(w, why)
	case s.serving == w:
		s.serving = nil
		if !m.stopping && !s.retired {
			m.servingExited(w, how)
		}
	default: // draining
		m.drained(w)
	}
	if !m.stopping {
		m.checkSockets(w.gen.n)
	}
}

// servingExited handles the death of a slot's serving worker.
func (m *Master) servingExited(w *worker, how string) {
	s := w.slot
	exited := func(then string) {
		m.log.Warn().Str("event", "serving_exited").Int("gen", w.gen.n).Int("index", s.index).Str("how", how).
			Msg("serving worker exited " + then)
	}
	if r := m.rollout; r != nil {
		if mv := r.covering(s); mv != nil {
			switch {
			case mv.done:
				// It took over in this rollout and died: the release is bad.
				m.rolloutFailed(r, fmt.Errorf("new worker (%s) %s %s after it was ready, during the reload",
					m.who(w), how, m.env.now().Sub(w.readyAt).Round(time.Millisecond)))
			case mv.w != nil && (mv.w.state == held || mv.w.state == probation):
				exited("during the reload: its replacement takes over now")
				m.takeOver(mv.w)
				m.advance(r)
			case mv.w != nil:
				exited("during the reload: its replacement takes over when ready")
			default:
				exited("during the reload: the new generation takes its place now")
				r.hurry(mv)
				m.advance(r)
			}
			return
		}
	}
	if in := s.incoming; in != nil {
		if in.state == probation || in.state == held {
			// Its replacement is ready: nothing is left to protect.
			m.takeOver(in)
			return
		}
		// Its replacement (self-healing) is starting: it takes the slot
		// over once ready, or, should it fail, the slot restarts as after
		// a crash (replaceFailed). A restart now would run beside it.
		exited("while its replacement starts: the replacement takes over when ready")
		return
	}
	m.crashed(s, w.readyAt, fmt.Errorf("worker (%s) %s", m.who(w), how))
}

// incomingFailed handles an incoming worker that will not take over: it
// exited, was not ready in time, or stopped within its probation. It has
// been drained if it still runs.
func (m *Master) incomingFailed(w *worker, why error) {
	s := w.slot
	if s.incoming == w {
		s.incoming = nil
	}
	if m.stopping || s.retired {
		return
	}
	if r := m.rollout; r != nil && r.moving(w) != nil {
		m.rolloutFailed(r, why)
		return
	}
	m.replaceFailed(s, w, why)
}

// servingCount is how many slots have a serving worker.
func (m *Master) servingCount() int {
	n := 0
	for _, s := range m.slots {
		if !s.empty() {
			n++
		}
	}
	return n
}
