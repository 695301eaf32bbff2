package upgrader

import (
	"fmt"
	"time"

	"github.com/baton-sh/baton/internal/host"
)

// generation is one release of the service: the program and directory
// resolved when a reload made it. Every worker of a generation, whether
// started by the reload, restarted after a crash, replaced by self-healing,
// added by a scale-up or started again by a rollback, runs that release.
type generation struct {
	n       int
	release host.Release
}

// workerState is where a worker is in its life.
type workerState int

const (
	// starting: started, not ready yet.
	starting workerState = iota
	// probation: ready, serving beside the worker it replaces until it has
	// stayed up for MinReady.
	probation
	// held: ready (and through probation), waiting for the rest of its
	// rollout batch before it takes over.
	held
	// serving: its slot's worker.
	serving
	// draining: told to stop; finishing in-flight work.
	draining
)

var workerStateNames = [...]string{"starting", "probation", "held", "serving", "draining"}

func (s workerState) String() string { return workerStateNames[s] }

// incoming reports whether a worker in state s is its slot's replacement,
// started but not yet its slot's server.
func (s workerState) incoming() bool { return s == starting || s == probation || s == held }

// worker is one started worker process and the process group it leads.
type worker struct {
	gen     *generation
	slot    *slot
	pid     int
	state   workerState
	trigger Trigger // why it was started
	started time.Time
	readyAt time.Time
	timer   func() // stops the one timer of its state
	waited  int    // "still waiting" lines logged while starting
	killed  bool   // its drain timeout passed and it got SIGKILL
	// mainExit says how its main process ended while the rest of its
	// process group still drains; the worker ends with its group.
	mainExit string
	status   statusLine
	budget   statusLine // the log budget of its other notify lines
	// deadline is when a starting worker's ready timeout runs out;
	// drainUntil, a draining one's drain timeout.
	deadline, drainUntil time.Time
	// Self-healing (heal.go): its watchdog interval and timer, whose
	// sequence number tells a stale expiry from a live one, and its age
	// timer. watchdogDue and ageDue are when those timers fire: an
	// in-place upgrade hands them over, so that neither starts afresh.
	watchdogEvery time.Duration
	watchdog      func()
	watchdogSeq   int
	// watchdogDeferred: its last deadline was deferred (seen late) and
	// no WATCHDOG=1 has come since, so the next one is not deferred.
	watchdogDeferred    bool
	ageTimer            func()
	watchdogDue, ageDue time.Time
}

// slot is one of the N places a worker serves from. It has at most one
// serving worker and at most one incoming one (its replacement, starting,
// on probation or held); workers it had before drain outside it.
type slot struct {
	index    int
	gen      *generation // the generation it runs, or is moving to
	serving  *worker
	incoming *worker
	// crashes counts its consecutive crashes, for backoff and
	// RestartLimit; restartDue cancels the restart scheduled after one.
	crashes    int
	restartDue func()
	restartAt  time.Time
	restarts   int  // restarts begun, for status
	retired    bool // removed by a scale-down
	// healFails counts its self-healing replacements that failed in a row;
	// healRetry cancels the next attempt.
	healFails int
	healRetry func()
	retryAt   time.Time
	retryWhy  Trigger
	// replacing is the replacement of its worker under way outside any
	// rollout (a crash restart, a scale-up, self-healing): its incoming
	// worker is that replacement's.
	replacing *replacement
}

// empty reports whether no worker serves from s.
func (s *slot) empty() bool { return s.serving == nil }

// who names w in messages: "generation 3, pid 120", with its slot when
// there are several ("generation 3, worker 2, pid 120").
func (m *Master) who(w *worker) string {
	if len(m.slots) > 1 || w.slot.index > 0 {
		return fmt.Sprintf("generation %d, worker %d, pid %d", w.gen.n, w.slot.index, w.pid)
	}
	return fmt.Sprintf("generation %d, pid %d", w.gen.n, w.pid)
}
