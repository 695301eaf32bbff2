package upgrader

import (
	"errors"
	"sort"
	"syscall"
	"time"

	"github.com/baton-sh/baton/internal/host"
)

// A requested graceful stop (Stop: TERM, INT, POST /-/quit) begins with a
// stop delay when Options.StopDelay or Options.OnStopping is set:
//
//	stop requested ──▶ stop delay ──StopDelay passed and on-stopping ended──▶ drain ──▶ exit
//
// From its first moment the master is stopping: it no longer claims
// readiness (Status.Stopping, the admin /-/ready, STOPPING=1 to its own
// service manager), starts nothing, and runs the on-stopping hook. Serving
// workers (and those on probation) keep serving through the delay, so that
// load balancers, Kubernetes Services and registries stop sending traffic
// before the drain begins; a worker still starting is drained at once, as
// nobody sends it traffic yet. A second Stop ends the delay at once,
// StopNow kills everything at once (hooks included, and starts no
// on-stopping hook), and a stop the master decides itself (crash loop,
// first generation never ready) has no delay.

// stopDelay is the loop's state during a stop delay.
type stopDelay struct {
	active bool
	passed bool   // StopDelay has passed
	cancel func() // its timer
}

// requestStop handles Stop and StopNow.
func (m *Master) requestStop(fast bool) {
	switch {
	case m.delay.active && !fast:
		m.log.Info().Str("event", "stop_delay_skipped").Msg("stop requested again: skipping the rest of the stop delay")
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
	m.emit(Event{Kind: Stopping}, m.log.Info().Bool("fast", false).Int("workers", len(m.workers)).
		Str("stop_delay", m.opts.StopDelay.String()))
	m.abandonReloads()
	for _, w := range m.sortedWorkers() {
		switch w.state {
		case starting:
			if w.slot.incoming == w {
				w.slot.incoming = nil
			}
			m.drain(w)
		case probation, held:
			m.disarm(w) // it serves on until the drain
		}
	}
	if m.hooks.served {
		m.runHook(hookOnStopping, m.current)
	}
	if !m.delay.passed {
		m.log.Info().Str("event", "stop_delay").Str("stop_delay", m.opts.StopDelay.String()).Int("gen", m.currentGen()).
			Msg("not ready any more; every worker keeps serving for --stop-delay before the drain")
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

// endStopDelayIfDone drains once the delay has passed and the on-stopping
// hook has ended.
func (m *Master) endStopDelayIfDone() {
	if m.delay.active && m.delay.passed && !m.stoppingHookBusy() {
		m.stop(false)
	}
}

// cancelStopDelay ends the stop delay, if one runs.
func (m *Master) cancelStopDelay() {
	cancel(&m.delay.cancel)
	m.delay = stopDelay{}
}

// stop begins a graceful (drain) or fast (kill) stop of every worker and
// stray. Run returns once all of them have been reaped and no hook runs.
func (m *Master) stop(fast bool) {
	if m.stopping && !fast && !m.delay.active {
		return
	}
	m.cancelStopDelay()
	if !m.stopping {
		m.stopping = true
		m.emit(Event{Kind: Stopping}, m.log.Info().Bool("fast", fast).Int("workers", len(m.workers)))
		if m.hooks.served && !fast {
			m.runHook(hookOnStopping, m.current)
		}
	}
	if fast || m.stopKill.IsZero() {
		m.stopKill = m.env.now().Add(m.opts.DrainTimeout)
		if fast {
			m.stopKill = m.env.now()
			m.hooks.waiting = nil
		}
	}
	m.abandonReloads()
	m.stopHealing()
	for _, w := range m.sortedWorkers() {
		switch {
		case fast:
			m.disarm(w)
			w.killed = true
			m.env.signal(w.pid, syscall.SIGKILL, true)
		case w.state != draining:
			m.drain(w)
		}
	}
	for _, s := range m.slots {
		s.serving, s.incoming = nil, nil
	}
	m.stopStrays(fast)
	m.env.stopping(fast)
}

// forward sends sig to every worker that serves.
func (m *Master) forward(sig syscall.Signal) {
	sent := 0
	for _, w := range m.sortedWorkers() {
		if w.state == serving || w.state == probation || w.state == held {
			m.log.Info().Str("event", "forwarded").Str("signal", host.SignalName(sig)).Int("gen", w.gen.n).
				Int("index", w.slot.index).Int("pid", w.pid).Msg("forwarding signal")
			m.env.signal(w.pid, sig, false)
			sent++
		}
	}
	if sent == 0 {
		m.log.Warn().Str("event", "not_forwarded").Str("signal", host.SignalName(sig)).Msg("no serving worker to forward the signal to")
	}
}

// SocketCheckEvery is how often the master looks for a held socket that
// nothing can reach any more, while it holds a unix socket whose file it
// created (the file may be deleted, which nothing else reveals) or one it
// could not bind anew. It also looks at each reload and whenever a worker
// exits or says STOPPING=1, which is when a worker that shut its socket
// down shows it; a master of TCP sockets alone does not wake for it. A
// look costs a system call or two per socket.
const SocketCheckEvery = time.Second

// socketsLost is the loop's memory of the sockets it could not bind anew,
// so that a failure that lasts is logged once, not at every look.
type socketsLost map[string]string // socket name → the error logged

// watchSockets looks for lost sockets now and, while that may find what
// nothing else would (see SocketCheckEvery), every SocketCheckEvery until
// the master stops. Called again, it starts the wait for the next look
// over.
func (m *Master) watchSockets() {
	cancel(&m.socketCheck)
	if m.stopping {
		return
	}
	m.checkSockets(0)
	if m.socketCheck == nil && m.socketsWatched() {
		m.socketCheck = m.env.after(SocketCheckEvery, socketTick{})
	}
}

// socketsWatched reports whether a periodic look may find a lost socket:
// one with a file of its own, or one that could not be bound anew.
func (m *Master) socketsWatched() bool {
	if len(m.socketsLost) > 0 {
		return true
	}
	for _, s := range m.opts.Sockets {
		if s.HasFile() {
			return true
		}
	}
	return false
}

// checkSockets binds anew the sockets nothing can reach any more (see
// host.CheckSockets), and replaces every generation with one that has the
// new ones: a restore. gen is the generation whose exit or STOPPING=1
// showed the loss, 0 if none did.
func (m *Master) checkSockets(gen int) {
	lost := m.env.checkSockets()
	if m.stopping {
		return
	}
	var shut, gone, paths []string
	failing := map[string]bool{}
	for _, l := range lost {
		if l.Err != nil {
			failing[l.Name] = true
			m.socketFailed(l)
			continue
		}
		if l.Path != "" {
			gone, paths = append(gone, l.Name), append(paths, l.Path)
		} else {
			shut = append(shut, l.Name)
		}
	}
	for name := range m.socketsLost {
		if !failing[name] {
			delete(m.socketsLost, name)
		}
	}
	if len(m.socketsLost) > 0 && m.socketCheck == nil {
		// Found at a worker's exit: try again in a while, not only at
		// the next exit.
		m.socketCheck = m.env.after(SocketCheckEvery, socketTick{})
	}
	if len(shut) == 0 && len(gone) == 0 {
		return
	}
	if len(gone) > 0 {
		m.log.Error().Str("event", "sockets_lost").Strs("sockets", gone).Strs("paths", paths).
			Msg("a unix socket file was deleted or replaced, so nothing could connect to it (a temporary-file cleaner, or a deploy that removed its directory?); baton bound it anew at the same path and starts a generation on it. Keep the socket where nothing removes it, such as /run/APP (RuntimeDirectory= under systemd)")
	}
	if len(shut) > 0 {
		// A worker told to drain is the likely culprit (servers shut the
		// listener down as they stop); the one whose exit or STOPPING=1
		// showed the loss may only have died of it.
		by := gen
		for _, w := range m.workers {
			if w.state == draining && (by == gen || w.gen.n < by) {
				by = w.gen.n
			}
		}
		ev := m.log.Error().Str("event", "sockets_lost").Strs("sockets", shut)
		if by != 0 {
			ev = ev.Int("gen", by)
		}
		ev.Msg("a worker shut down a listening socket every generation shares (shutdown(2) on its inherited copy); baton bound it anew and starts a generation on it. Fix the server to close, not shut down, its listener")
	}
	m.restoreSockets()
}

// socketFailed logs, once for as long as it lasts, that a lost socket
// could not be bound anew.
func (m *Master) socketFailed(l host.LostSocket) {
	if m.socketsLost[l.Name] == l.Err.Error() {
		return
	}
	if m.socketsLost == nil {
		m.socketsLost = socketsLost{}
	}
	m.socketsLost[l.Name] = l.Err.Error()
	what := "a worker shut down a listening socket every generation shares"
	if l.Path != "" {
		what = "the unix socket file " + l.Path + " was deleted or replaced"
	}
	m.log.Error().Str("event", "sockets_lost").Strs("sockets", []string{l.Name}).Err(l.Err).
		Msgf("%s, and binding it anew failed: connections to it fail until it can be bound; baton tries again every %s", what, SocketCheckEvery)
}

// restoreSockets replaces every worker, all of which hold sockets that
// were lost, with a generation started on the new ones.
func (m *Master) restoreSockets() {
	// The reload under way, if any, is over (a success if every slot had
	// moved), and the restore replaces them all now.
	for _, r := range append([]*rollout(nil), m.finishing...) {
		r.old = nil
		m.finish(r)
	}
	if r := m.rollout; r != nil {
		if !r.rolled() || r.failure != nil {
			m.stopBatch(r)
			r.rollback = false
			if r.failure == nil {
				r.failure = errors.New("the listening sockets were lost during the reload: a restore replaces every worker")
			}
		}
		r.old = nil
		m.finish(r)
	}
	m.beginReload(TriggerRestore, nil)
}

// sortedWorkers lists the live workers by generation, slot and PID, for
// an order that logs and tests can rely on.
func (m *Master) sortedWorkers() []*worker {
	out := make([]*worker, 0, len(m.workers))
	for _, w := range m.workers {
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.gen.n != b.gen.n {
			return a.gen.n < b.gen.n
		}
		if a.slot.index != b.slot.index {
			return a.slot.index < b.slot.index
		}
		return a.pid < b.pid
	})
	return out
}
