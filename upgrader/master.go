package upgrader

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/baton-sh/baton/notify"
)

// ErrNotRunning is the result of a request to a Master whose Run has ended.
var ErrNotRunning = errors.New("master is not running")

// ErrStopping is the result of a reload that a stop overtook.
var ErrStopping = errors.New("master is stopping")

// Master supervises generations of one worker command. Create it with New,
// run it with Run, and steer it with Reload, Stop, StopNow and Signal from
// any goroutine.
//
// A Master reaps every child of the process (wait4(-1)), which makes it a
// correct subreaper and PID 1, and means one Master per process, with no
// other code in the process waiting for children of its own.
type Master struct {
	opts   Options
	log    zerolog.Logger
	events chan any
	done   chan struct{}
	env    env

	// Everything below is owned by the goroutine in Run.
	started    time.Time
	lastGen    int
	live       map[int]*generation // every unreaped worker, by PID
	current    *generation         // the serving generation
	inflight   *reload             // the reload under way
	queued     *reload             // the one coalesced behind it
	stopping   bool
	exitErr    error
	crashes    int // consecutive, for backoff and RestartLimit
	restarts   int // crash restarts begun
	restartDue func()
	lastReload *ReloadStatus
	ignored    statusLine // the log budget of notify messages from strangers
	delay      stopDelay  // see stop.go
	hooks      hookState  // see hooks.go
}

type genState int

const (
	starting  genState = iota // started, not ready yet
	probation                 // ready, serving beside the current one for MinReady
	serving                   // the current generation
	draining                  // told to stop; finishing in-flight work
)

var genStateNames = [...]string{"starting", "probation", "serving", "draining"}

func (s genState) String() string { return genStateNames[s] }

// generation is one started worker process and its process group.
type generation struct {
	n       int
	pid     int
	state   genState
	started time.Time
	readyAt time.Time
	timer   func() // stops the one timer of its state
	waited  int    // "still waiting" lines logged while starting
	killed  bool   // its drain timeout passed and its group got SIGKILL
	// mainExit says how its main process ended while the rest of its
	// process group still drained; the generation ends with the group.
	mainExit string
	status   statusLine
}

// reload is one replacement of the current generation by a new one. The
// first start and crash restarts are reloads too, with nothing to drain.
type reload struct {
	trigger Trigger
	started time.Time
	next    *generation // nil once it has failed
	old     *generation // set when next serves and old drains
	waiters []chan<- Result
}

// Events into the loop.
type (
	reloadReq  struct{ reply chan<- Result }
	stopReq    struct{ fast bool }
	signalReq  struct{ sig syscall.Signal }
	statusReq  struct{ reply chan<- Status }
	restartReq struct{}
	// readySeen is readiness learned outside the notify socket: a
	// protocol's own channel, or a generation seen accepting.
	readySeen struct {
		pid int
		how string
	}
	// childExit is one reaped child.
	childExit struct {
		pid    int
		status syscall.WaitStatus
	}
	timerFired struct {
		g     *generation
		state genState // the state the timer was armed in
	}
	waitTick   struct{ g *generation }
	groupCheck struct{}
	// socketsLost says that the master had to bind sockets anew because a
	// worker shut the shared ones down; by is the generation suspected.
	socketsLost struct {
		names []string
		by    int
		err   error
	}
)

// New checks opts and returns a Master ready to Run.
func New(opts Options) (*Master, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	m := newMaster(opts, nil)
	return m, nil
}

func newMaster(opts Options, e env) *Master {
	return &Master{
		opts: opts,
		log:  opts.Log,
		// Unbuffered: a send either reaches the loop or, once Run has
		// ended, fails (see send); nothing is left unanswered in a buffer.
		events: make(chan any),
		done:   make(chan struct{}),
		live:   map[int]*generation{},
		env:    e,
	}
}

// Run starts the first generation and supervises workers until a stop has
// drained them all. It returns nil after a stop, a *StartupError when the
// first generation never became ready, and a *CrashLoopError when workers
// crashed more than RestartLimit times in a row. Every child has been reaped
// when Run returns; the sockets are left open for the caller to close.
func (m *Master) Run() error {
	defer close(m.done)
	m.started = time.Now()
	sys, err := startSystem(m)
	if err != nil {
		return &StartupError{err}
	}
	defer sys.close()
	m.env = sys
	m.loop()
	return m.exitErr
}

// loop handles events until a stop has reaped every worker.
func (m *Master) loop() {
	m.beginReload(TriggerStart, nil)
	for !m.stopping || len(m.live) > 0 || m.hooks.running != nil || m.env.strays() > 0 {
		m.handle(<-m.events)
	}
}

// send delivers an event to the loop, or drops it once Run has ended.
func (m *Master) send(e any) bool {
	select {
	case m.events <- e:
		return true
	case <-m.done:
		return false
	}
}

// Reload asks for a new generation. The returned channel receives the
// result of the reload that covers this request: the one about to start,
// or, if one is already under way, the single one queued behind it (all
// requests made during a reload share it). A failed reload leaves the
// current generation serving. Once Run has ended it receives ErrNotRunning.
func (m *Master) Reload() <-chan Result {
	c := make(chan Result, 1)
	if !m.send(reloadReq{c}) {
		c <- Result{Err: ErrNotRunning}
	}
	return c
}

// Stop drains every generation with the drain signal, kills what is left
// of them after the drain timeout, and makes Run return.
func (m *Master) Stop() { m.send(stopReq{fast: false}) }

// StopNow kills every worker's process group at once and makes Run return.
func (m *Master) StopNow() { m.send(stopReq{fast: true}) }

// Signal forwards sig to the current worker's main process.
func (m *Master) Signal(sig syscall.Signal) { m.send(signalReq{sig}) }

// Status reports the master's state as of now.
func (m *Master) Status() (Status, error) {
	c := make(chan Status, 1)
	if !m.send(statusReq{c}) {
		return Status{}, ErrNotRunning
	}
	return <-c, nil
}

func (m *Master) handle(e any) {
	switch e := e.(type) {
	case reloadReq:
		m.beginReload(TriggerReload, e.reply)
	case stopReq:
		m.requestStop(e.fast)
	case stopDelayOver:
		m.stopDelayOver()
	case hookDone:
		m.hookEnded(e)
	case signalReq:
		m.forward(e.sig)
	case statusReq:
		e.reply <- m.status()
	case childExit:
		m.exited(e)
	case notify.Datagram:
		m.notified(e)
	case readySeen:
		if g := m.live[e.pid]; g != nil {
			m.ready(g, e.how)
		}
	case timerFired:
		m.timerFired(e.g, e.state)
	case waitTick:
		m.stillWaiting(e.g)
	case groupCheck:
		m.settleGroups()
		for _, g := range m.live {
			if g.mainExit != "" {
				m.env.after(groupRecheck, groupCheck{})
				break
			}
		}
	case restartReq:
		m.restartDue = nil
		if !m.stopping && m.current == nil && m.inflight == nil {
			m.beginReload(TriggerRestart, nil)
		}
	case socketsLost:
		m.socketsLost(e)
	}
}

// beginReload starts a new generation, or queues the request behind the
// reload under way.
func (m *Master) beginReload(t Trigger, reply chan<- Result) {
	if m.stopping {
		m.log.Info().Stringer("kind", t).Msg("reload requested while stopping: ignored")
		if reply != nil {
			reply <- Result{Generation: m.currentGen(), Err: ErrStopping}
		}
		return
	}
	if m.inflight != nil {
		if m.queued == nil {
			m.queued = &reload{trigger: t}
			m.log.Info().Int("gen", m.inflight.gen()).Msg("reload requested during a reload: queued to run after it")
		}
		if reply != nil {
			m.queued.waiters = append(m.queued.waiters, reply)
		}
		return
	}
	m.cancelRestart()
	r := &reload{trigger: t, started: m.env.now()}
	if reply != nil {
		r.waiters = append(r.waiters, reply)
	}
	m.start(r)
}

func (m *Master) start(r *reload) {
	m.inflight = r
	m.lastGen++
	n := m.lastGen
	if r.trigger == TriggerRestart {
		m.restarts++
	}
	m.emit(Event{Kind: ReloadStarted, Generation: n, Trigger: r.trigger}, m.log.Info().Stringer("kind", r.trigger))

	pid, err := m.env.start(n)
	if err != nil {
		m.finishReload(fmt.Errorf("cannot start generation %d: %w", n, err))
		return
	}
	g := &generation{n: n, pid: pid, state: starting, started: m.env.now()}
	r.next = g
	m.live[pid] = g
	if m.opts.Ready == ReadyDelay {
		m.arm(g, m.opts.ReadyDelay)
	} else {
		m.arm(g, m.opts.ReadyTimeout)
	}
	m.env.after(waitEvery, waitTick{g})
	m.emit(Event{Kind: WorkerStarted, Generation: n, PID: pid}, m.log.Info())
}

// arm sets g's one timer for its current state.
func (m *Master) arm(g *generation, d time.Duration) {
	if g.timer != nil {
		g.timer()
	}
	g.timer = m.env.after(d, timerFired{g, g.state})
}

func (m *Master) disarm(g *generation) {
	if g.timer != nil {
		g.timer()
		g.timer = nil
	}
}

func (m *Master) timerFired(g *generation, armed genState) {
	if g.state != armed || m.live[g.pid] != g {
		return // the state moved on since the timer was set
	}
	switch g.state {
	case starting:
		if m.opts.Ready == ReadyDelay {
			m.ready(g, "alive after --ready delay")
			return
		}
		// It may already be answering requests: drain it like any old
		// generation rather than cut them.
		m.inflight.next = nil
		m.drain(g)
		m.finishReload(fmt.Errorf("new worker (generation %d, pid %d) was not ready after %s (--ready-timeout) and was told to drain: %s",
			g.n, g.pid, m.opts.ReadyTimeout, m.waitingFor()))
	case probation:
		m.promote(g)
	case draining:
		g.timer, g.killed = nil, true
		msg := "worker still running after the drain timeout: sending SIGKILL to its process group"
		if g.mainExit != "" {
			msg = "processes of the worker's process group still running after the drain timeout (its main process has exited): sending them SIGKILL"
		}
		m.log.Warn().Int("gen", g.n).Int("pid", g.pid).Str("drain_timeout", m.opts.DrainTimeout.String()).Msg(msg)
		m.env.signal(g.pid, syscall.SIGKILL, true)
	}
}

// groupRecheck is how often a draining generation whose main process has
// exited is looked at again. Its other members are not the master's
// children unless it is their subreaper, so their end may come with no
// event; this runs only while such a group drains, never when idle.
const groupRecheck = 50 * time.Millisecond

// ready handles a generation's word, by whatever channel, that it serves.
func (m *Master) ready(g *generation, how string) {
	if g.state != starting {
		return
	}
	g.readyAt = m.env.now()
	m.env.settled(g.pid)
	m.emit(Event{Kind: WorkerReady, Generation: g.n, PID: g.pid, Took: g.readyAt.Sub(g.started)}, m.log.Info().Str("how", how))
	if m.opts.MinReady > 0 && m.current != nil {
		g.state = probation
		m.arm(g, m.opts.MinReady)
		m.log.Info().Int("gen", g.n).Int("pid", g.pid).Str("min_ready", m.opts.MinReady.String()).
			Int("serving", m.current.n).Msg("both generations serve until the new one has stayed up for --min-ready")
		return
	}
	m.promote(g)
}

// promote makes g the serving generation and drains the one it replaces.
func (m *Master) promote(g *generation) {
	m.disarm(g)
	g.state = serving
	old := m.current
	m.current = g
	m.runHook(hookOnReady, g)
	if old == nil {
		m.finishReload(nil)
		return
	}
	m.inflight.old = old
	m.drain(old)
}

func (m *Master) drain(g *generation) {
	g.state = draining
	m.arm(g, m.opts.DrainTimeout)
	m.emit(Event{Kind: Draining, Generation: g.n, PID: g.pid}, m.log.Info().Str("signal", signalName(m.opts.DrainSignal)).Bool("group", m.opts.DrainGroup))
	if err := m.env.signal(g.pid, m.opts.DrainSignal, m.opts.DrainGroup); err != nil && !errors.Is(err, syscall.ESRCH) {
		m.log.Error().Err(err).Int("gen", g.n).Int("pid", g.pid).Msg("cannot signal worker to drain")
	}
}

// finishReload ends the reload under way, answers everyone waiting for it,
// and starts the queued one.
func (m *Master) finishReload(err error) {
	r := m.inflight
	m.inflight = nil
	took := m.env.now().Sub(r.started)
	if err != nil && m.current != nil && !errors.Is(err, ErrStopping) {
		err = fmt.Errorf("%w; generation %d is still serving", err, m.current.n)
	}
	if err == nil && r.next != nil {
		m.env.tookOver(r.next.pid) // its predecessor is gone
	}
	res := Result{Generation: m.currentGen(), Took: took, Err: err}
	m.lastReload = newReloadStatus(r, res)
	if err != nil {
		m.emit(Event{Kind: ReloadFailed, Err: err, Generation: res.Generation, Took: took, Trigger: r.trigger}, m.log.Error().Err(err))
	} else {
		m.emit(Event{Kind: ReloadComplete, Generation: res.Generation, Took: took, Trigger: r.trigger}, m.log.Info())
	}
	for _, w := range r.waiters {
		w <- res
	}

	switch {
	case m.stopping:
		return
	case err != nil && r.trigger == TriggerStart:
		m.exitErr = &StartupError{err}
		m.stop(false)
		return
	case err != nil && m.current == nil:
		var readyAt time.Time
		if r.next != nil {
			readyAt = r.next.readyAt
		}
		m.crashed(readyAt, err)
		if m.stopping {
			return
		}
	}
	if q := m.queued; q != nil {
		m.queued = nil
		q.started = m.env.now()
		m.start(q)
	}
}

// exited handles a reaped child: one of our workers, or an orphan that was
// re-parented to us.
func (m *Master) exited(c childExit) {
	g := m.live[c.pid]
	if g == nil {
		m.log.Debug().Int("pid", c.pid).Str("how", describeExit(c.status)).Msg("reaped orphan")
		m.settleGroups()
		return
	}
	how := describeExit(c.status)
	if g.state == draining && m.env.groupAlive(g.pid) {
		// The main process is gone but others of its group still finish
		// their requests (a shell wrapper under --drain-group, a server
		// whose children drain on their own): the generation ends with
		// its group, or at its drain timeout.
		if g.mainExit == "" {
			m.env.after(groupRecheck, groupCheck{})
			if !m.opts.DrainGroup && !g.killed {
				// Only the main process was told to drain: the rest of
				// its group (a helper it started) hears it now, rather
				// than hold the drain until SIGKILL.
				m.env.signal(g.pid, m.opts.DrainSignal, true)
			}
		}
		g.mainExit = how
		m.log.Info().Int("gen", g.n).Int("pid", g.pid).Str("how", how).
			Msg("worker's main process exited; the rest of its process group was told to drain too")
		return
	}
	m.ended(g, how)
}

// settleGroups ends every draining generation whose main process has
// exited and whose process group is now empty.
func (m *Master) settleGroups() {
	for _, g := range m.live {
		if g.mainExit != "" && !m.env.groupAlive(g.pid) {
			m.ended(g, g.mainExit)
		}
	}
}

// ended handles the end of generation g, how its main process ended.
func (m *Master) ended(g *generation, how string) {
	delete(m.live, g.pid)
	if m.current == g {
		m.current = nil
	}
	m.disarm(g)
	m.env.gone(g.pid)
	ran := m.env.now().Sub(g.started)
	m.emit(Event{Kind: WorkerExited, Generation: g.n, PID: g.pid},
		m.log.Info().Str("how", how).Str("ran", ran.Round(time.Millisecond).String()).Stringer("state", g.state))
	defer func() {
		// Checked once the exit is handled: a restore is one more reload.
		if m.stopping {
			return
		}
		if lost := m.env.checkSockets(g.n); lost != nil {
			m.socketsLost(*lost)
		}
	}()

	isNext := m.inflight != nil && m.inflight.next == g
	switch {
	case g.state == starting && isNext:
		m.inflight.next = nil
		if left := m.env.daemonized(g.n); left != "" {
			m.finishReload(fmt.Errorf("new worker (generation %d, pid %d) daemonized: it %s before it was ready and left %s running; run the server in the foreground", g.n, g.pid, how, left))
			break
		}
		m.finishReload(fmt.Errorf("new worker (generation %d, pid %d) %s before it was ready", g.n, g.pid, how))
	case g.state == probation && isNext:
		m.inflight.next = nil
		m.finishReload(fmt.Errorf("new worker (generation %d, pid %d) %s %s after it was ready, within --min-ready %s",
			g.n, g.pid, how, m.env.now().Sub(g.readyAt).Round(time.Millisecond), m.opts.MinReady))
	case g.state == serving:
		switch {
		case m.stopping:
		case m.inflight != nil && m.inflight.next == g:
			// It took over, and died while its predecessor drained.
			m.finishReload(fmt.Errorf("new worker (generation %d, pid %d) %s %s after it was ready, while generation %d drained",
				g.n, g.pid, how, m.env.now().Sub(g.readyAt).Round(time.Millisecond), m.inflight.old.n))
		case m.inflight != nil && m.inflight.next != nil:
			m.log.Warn().Int("gen", g.n).Int("next", m.inflight.next.n).
				Msg("serving worker exited during a reload: the new generation takes over when ready")
		default:
			m.crashed(g.readyAt, fmt.Errorf("worker (generation %d, pid %d) %s", g.n, g.pid, how))
		}
	case g.state == draining:
		if m.inflight != nil && m.inflight.old == g {
			m.finishReload(nil)
		}
	}
}

// crashed schedules a restart after a worker died with nothing else
// serving, backing off exponentially, or gives up past RestartLimit.
func (m *Master) crashed(readyAt time.Time, why error) {
	if !readyAt.IsZero() && m.env.now().Sub(readyAt) >= StableAfter {
		m.crashes = 0
	}
	m.crashes++
	if m.opts.RestartLimit >= 0 && m.crashes > m.opts.RestartLimit {
		m.exitErr = &CrashLoopError{Crashes: m.crashes, Last: why}
		m.log.Error().Err(why).Int("crashes", m.crashes).Msg("worker keeps crashing: giving up")
		m.stop(false)
		return
	}
	delay := m.opts.RestartBackoff << (m.crashes - 1)
	if delay > m.opts.RestartBackoffMax || delay <= 0 {
		delay = m.opts.RestartBackoffMax
	}
	m.log.Warn().Err(why).Int("crashes", m.crashes).Str("restart_in", delay.String()).Msg("worker crashed: restarting")
	m.cancelRestart()
	m.restartDue = m.env.after(delay, restartReq{})
}

func (m *Master) cancelRestart() {
	if m.restartDue != nil {
		m.restartDue()
		m.restartDue = nil
	}
}

// stop begins a graceful (drain) or fast (kill) stop of every generation.
// Run returns once all of them have been reaped.
func (m *Master) stop(fast bool) {
	if m.stopping && !fast && !m.delay.active {
		return
	}
	m.cancelStopDelay()
	if !m.stopping {
		m.stopping = true
		m.emit(Event{Kind: Stopping}, m.log.Info().Bool("fast", fast).Int("workers", len(m.live)))
		if m.hooks.served {
			m.runHook(hookOnStopping, m.current)
		}
	}
	m.abandonReloads()
	for _, g := range m.live {
		switch {
		case fast:
			g.killed = true
			m.env.signal(g.pid, syscall.SIGKILL, true)
		case g.state != draining:
			m.drain(g)
		}
	}
	m.env.stopping(fast)
}

// abandonReloads ends the reload under way and the one queued, as a stop
// does: nothing starts any more.
func (m *Master) abandonReloads() {
	m.cancelRestart()
	if q := m.queued; q != nil {
		m.queued = nil
		for _, w := range q.waiters {
			w <- Result{Generation: m.currentGen(), Err: ErrStopping}
		}
	}
	if r := m.inflight; r != nil {
		if r.old != nil {
			// The new generation took over; only the old one's drain was
			// left, and the stop finishes that.
			m.finishReload(nil)
		} else {
			r.next = nil // drained with the others
			m.finishReload(ErrStopping)
		}
	}
}

func (m *Master) forward(sig syscall.Signal) {
	if m.current == nil {
		m.log.Warn().Str("signal", signalName(sig)).Msg("no serving worker to forward the signal to")
		return
	}
	m.log.Info().Str("signal", signalName(sig)).Int("gen", m.current.n).Int("pid", m.current.pid).Msg("forwarding signal")
	m.env.signal(m.current.pid, sig, false)
}

// socketsLost replaces the serving generation after the master bound
// sockets anew: the serving one holds the dead ones.
func (m *Master) socketsLost(e socketsLost) {
	if m.stopping {
		return
	}
	// A generation told to drain is the likely culprit (servers shut the
	// listener down as they stop); the one whose exit or STOPPING=1 showed
	// the loss may only have died of it.
	by := e.by
	for _, g := range m.live {
		if g.state == draining && (by == e.by || g.n < by) {
			by = g.n
		}
	}
	ev := m.log.Error().Strs("sockets", e.names)
	if by != 0 {
		ev = ev.Int("gen", by)
	}
	if e.err != nil {
		ev.Err(e.err).Msg("a worker shut down a listening socket every generation shares, and binding it anew failed: connections to it are refused until baton restarts")
		return
	}
	ev.Msg("a worker shut down a listening socket every generation shares (shutdown(2) on its inherited copy); baton bound it anew and starts a generation on it. Fix the server to close, not shut down, its listener")
	m.beginReload(TriggerRestore, nil)
}

func (m *Master) currentGen() int {
	if m.current == nil {
		return 0
	}
	return m.current.n
}

func (r *reload) gen() int {
	if r.next != nil {
		return r.next.n
	}
	return 0
}

// emit logs one lifecycle step on ev and hands it to Options.OnEvent.
func (m *Master) emit(e Event, ev *zerolog.Event) {
	if e.Generation != 0 {
		ev = ev.Int("gen", e.Generation)
	}
	if e.PID != 0 {
		ev = ev.Int("pid", e.PID)
	}
	if e.Took != 0 {
		ev = ev.Str("took", e.Took.Round(time.Millisecond).String())
	}
	ev.Str("event", e.Kind.Key()).Msg(e.Kind.String())
	m.tellService(e)
	if m.opts.OnEvent != nil {
		m.opts.OnEvent(e)
	}
}

// selfPID is the master's own PID, for Status.
var selfPID = os.Getpid()
