package upgrader

import (
	"fmt"
	"syscall"

	"github.com/baton-sh/baton/internal/host"
	"github.com/baton-sh/baton/notify"
)

// event is one input of the loop. The set is closed: every event is a type
// of this package whose apply method is its whole handling, called on the
// loop's goroutine, so the compiler proves that every event is handled and
// nothing outside the loop touches its state.
type event interface{ apply(m *Master) }

// Requests from the API. A reply channel, when there is one, is buffered:
// the loop never blocks on an answer.
type (
	reloadReq struct {
		trigger Trigger
		reply   chan<- Result
	}
	// scaleReq sets the worker count to n, or moves it by delta when n
	// is 0 (SIGTTIN, SIGTTOU).
	scaleReq struct {
		n, delta int
		reply    chan<- Result
	}
	stopReq   struct{ fast bool }
	signalReq struct{ sig syscall.Signal }
	statusReq struct{ reply chan<- Status }
)

// Reports from the env.
type (
	// childExited is one reaped child: a worker's main process, a stray,
	// or an orphan re-parented to the master.
	childExited struct {
		pid    int
		status syscall.WaitStatus
	}
	// notified is a datagram on worker pid's own notify socket.
	notified struct {
		pid int
		d   notify.Datagram
	}
	// readySeen is readiness learned outside the notify socket: a
	// protocol's own channel, or the worker seen accepting.
	readySeen struct {
		pid int
		how string
	}
	// groupEmpty: the process group of worker pid, whose main process has
	// exited, has no live member left.
	groupEmpty struct{ pid int }
	// hookDone is a hook's end.
	hookDone host.HookResult
)

// Timers the loop arms.
type (
	// workerTimer is the one timer of worker w's state.
	workerTimer struct {
		w     *worker
		state workerState // the state it was armed in
	}
	// waitTick reports, every waitEvery, what a starting worker waits for.
	waitTick   struct{ w *worker }
	restartDue struct{ s *slot }
	strayKill  struct{ s *stray }
	// stopDelayOver is the end of Options.StopDelay.
	stopDelayOver struct{}
	// socketTick is the next look for lost sockets (SocketCheckEvery).
	socketTick struct{}
	// serviceWatchdogTick is the next keep-alive owed to the master's own
	// service manager (Options.ServiceWatchdog).
	serviceWatchdogTick struct{}
	// Self-healing (heal.go, probe.go).
	watchdogExpired struct {
		w   *worker
		seq int
	}
	ageReached  struct{ w *worker }
	memoryCheck struct{}
	healRetry   struct {
		w   *worker
		why Trigger
	}
	probeTick struct{}
)

// probeDone is a probe's answer, from the env.
type probeDone struct {
	ok     bool
	detail string
}

func (e reloadReq) apply(m *Master)   { m.beginReload(e.trigger, e.reply) }
func (e scaleReq) apply(m *Master)    { m.scale(e) }
func (e stopReq) apply(m *Master)     { m.requestStop(e.fast) }
func (e signalReq) apply(m *Master)   { m.forward(e.sig) }
func (e statusReq) apply(m *Master)   { e.reply <- m.status() }
func (e childExited) apply(m *Master) { m.reaped(e.pid, e.status) }
func (e notified) apply(m *Master)    { m.notified(e.pid, e.d) }
func (e groupEmpty) apply(m *Master)  { m.groupEmptied(e.pid) }
func (e hookDone) apply(m *Master)    { m.hookEnded(host.HookResult(e)) }
func (e waitTick) apply(m *Master)    { m.stillWaiting(e.w) }
func (e restartDue) apply(m *Master)  { m.restartSlot(e.s) }
func (e strayKill) apply(m *Master)   { m.killStray(e.s) }
func (e workerTimer) apply(m *Master) {
	if e.w.state == e.state && m.workers[e.w.pid] == e.w {
		m.timerFired(e.w)
	}
}
func (e readySeen) apply(m *Master) {
	if w := m.workers[e.pid]; w != nil {
		m.ready(w, e.how)
	}
}
func (stopDelayOver) apply(m *Master)       { m.stopDelayOver() }
func (socketTick) apply(m *Master)          { m.watchSockets() }
func (serviceWatchdogTick) apply(m *Master) { m.keepServiceAlive() }
func (e watchdogExpired) apply(m *Master) {
	if e.w.watchdogSeq == e.seq && e.w.watchdog != nil {
		e.w.watchdog = nil
		m.watchdogExpired(e.w)
	}
}
func (e ageReached) apply(m *Master) {
	e.w.ageTimer = nil
	m.heal(e.w, TriggerAge, fmt.Sprintf("it has served for --max-age %s", m.opts.MaxAge))
}
func (memoryCheck) apply(m *Master) { m.checkMemory() }
func (e healRetry) apply(m *Master) {
	e.w.slot.healRetry = nil
	m.heal(e.w, e.why, "trying again")
}
func (probeTick) apply(m *Master)   { m.probeNow() }
func (e probeDone) apply(m *Master) { m.probed(e.ok, e.detail) }
