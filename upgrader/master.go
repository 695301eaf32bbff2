// Package upgrader is baton's engine: it runs generations of a worker
// process over sockets the caller holds, replaces one generation with the
// next on request without refusing or cutting a connection, restarts
// crashed workers, and reaps every child.
//
// A Master keeps all of its state in one goroutine (Run). Everything else,
// signals, child exits, notify datagrams, timers and API calls, reaches it
// as an event on one channel; callers that want an answer send a reply
// channel along.
package upgrader

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/fdlimit"
	"github.com/baton-sh/baton/internal/sockets"
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

	// Everything below is owned by the goroutine in Run.
	spawner    *spawner
	notifyPath string
	started    time.Time
	lastGen    int
	live       map[int]*generation // every unreaped worker, by PID
	current    *generation         // the serving generation
	inflight   *reload             // the reload under way
	queued     *reload             // the one coalesced behind it
	stopping   bool
	exitErr    error
	crashes    int // consecutive, for backoff and RestartLimit
	restarts   int // ever
	restartDue *time.Timer
	lastReload *ReloadStatus
}

type genState int

const (
	starting genState = iota // started, not ready yet
	serving                  // ready; the current generation
	draining                 // told to stop; finishing in-flight work
)

var genStateNames = [...]string{"starting", "serving", "draining"}

func (s genState) String() string { return genStateNames[s] }

// generation is one started worker process and its process group.
type generation struct {
	n       int
	pid     int
	state   genState
	started time.Time
	readyAt time.Time
	timer   *time.Timer // ready timeout, ready delay or drain timeout
	status  string      // last STATUS= it sent
	handoff *handoff
}

// reload is one replacement of the current generation by a new one. The
// first start and crash restarts are reloads too, with nothing to drain.
type reload struct {
	kind    string // "start", "reload" or "restart"
	started time.Time
	next    *generation // nil once it has failed
	old     *generation // set when next is ready and old drains
	waiters []chan<- Result
}

// Events into the loop.
type (
	reloadReq  struct{ reply chan<- Result }
	stopReq    struct{ fast bool }
	signalReq  struct{ sig syscall.Signal }
	statusReq  struct{ reply chan<- Status }
	restartReq struct{}
	// readyByPipe is a tableflip worker's ready byte.
	readyByPipe struct{ pid int }
	timerFired  struct {
		g     *generation
		state genState // the state the timer was armed in
	}
)

// New checks opts and returns a Master ready to Run.
func New(opts Options) (*Master, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	return &Master{
		opts:   opts,
		log:    opts.Log,
		events: make(chan any, 16),
		done:   make(chan struct{}),
		live:   map[int]*generation{},
	}, nil
}

// Run starts the first generation and supervises workers until a stop has
// drained them all. It returns nil after a stop, a *StartupError when the
// first generation never became ready, and a *CrashLoopError when workers
// crashed more than RestartLimit times in a row. Every child has been reaped
// when Run returns; the sockets are left open for the caller to close.
func (m *Master) Run() error {
	defer close(m.done)
	m.started = time.Now()
	if m.opts.Subreaper {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return &StartupError{fmt.Errorf("cannot become a subreaper: %w", err)}
		}
	}

	sock, err := notify.ListenPrivate()
	if err != nil {
		return &StartupError{err}
	}
	defer sock.Close()
	m.notifyPath = sock.Path()
	go func() {
		for {
			d, err := sock.Receive()
			if err != nil {
				return
			}
			m.send(d)
		}
	}()

	m.spawner = newSpawner()
	defer m.spawner.close()
	stopReaper := make(chan struct{})
	defer close(stopReaper)
	go reap(func(c childExit) { m.send(c) }, stopReaper)

	m.beginReload("start", nil)
	for !m.stopping || len(m.live) > 0 {
		m.handle(<-m.events)
	}
	return m.exitErr
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
// current generation serving.
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
	select {
	case s := <-c:
		return s, nil
	case <-m.done:
		return Status{}, ErrNotRunning
	}
}

func (m *Master) handle(e any) {
	switch e := e.(type) {
	case reloadReq:
		m.beginReload("reload", e.reply)
	case stopReq:
		m.stop(e.fast)
	case signalReq:
		m.forward(e.sig)
	case statusReq:
		e.reply <- m.status()
	case childExit:
		m.exited(e)
	case notify.Datagram:
		m.notified(e)
	case readyByPipe:
		m.readyFrom(e.pid)
	case timerFired:
		m.timerFired(e.g, e.state)
	case restartReq:
		m.restartDue = nil
		if !m.stopping && m.current == nil && m.inflight == nil {
			m.beginReload("restart", nil)
		}
	}
}

// beginReload starts a new generation, or queues the request behind the
// reload under way.
func (m *Master) beginReload(kind string, reply chan<- Result) {
	if m.stopping {
		if reply != nil {
			reply <- Result{Generation: m.currentGen(), Err: ErrStopping}
		}
		return
	}
	if m.inflight != nil {
		if m.queued == nil {
			m.queued = &reload{kind: kind}
			m.log.Info().Int("gen", m.inflight.gen()).Msg("reload requested during a reload: queued to run after it")
		}
		if reply != nil {
			m.queued.waiters = append(m.queued.waiters, reply)
		}
		return
	}
	if m.restartDue != nil {
		m.restartDue.Stop()
		m.restartDue = nil
	}
	r := &reload{kind: kind, started: time.Now()}
	if reply != nil {
		r.waiters = append(r.waiters, reply)
	}
	m.start(r)
}

func (m *Master) start(r *reload) {
	m.inflight = r
	m.lastGen++
	n := m.lastGen
	m.emit(Event{Kind: ReloadStarted, Generation: n, Trigger: r.kind}, m.log.Info().Str("kind", r.kind))

	g, err := m.spawn(n)
	if err != nil {
		m.finishReload(fmt.Errorf("cannot start generation %d: %w", n, err))
		return
	}
	r.next = g
}

// spawn starts generation n through the exec shim, in its own process group.
func (m *Master) spawn(n int) (*generation, error) {
	o := &m.opts
	path, err := resolveCommand(o.Command[0], o.Dir, o.Env)
	if err != nil {
		return nil, err
	}
	if o.Dir != "" {
		if _, err := os.Stat(o.Dir); err != nil {
			return nil, fmt.Errorf("working directory: %w", err)
		}
	}
	h, err := m.newHandoff(n)
	if err != nil {
		return nil, err
	}
	pid, err := m.spawner.start(o.ShimPath, o.Command, &syscall.ProcAttr{
		Dir:   o.Dir,
		Env:   append(h.env, sockets.ShimVar(path)),
		Files: append([]uintptr{devNull(), o.Stdout.Fd(), o.Stderr.Fd()}, h.files...),
		Sys: &syscall.SysProcAttr{
			// Its own group, so a drain timeout can kill the worker
			// together with everything it started.
			Setpgid: true,
			// If the master dies, the worker is told to drain and exit
			// instead of holding the sockets with nobody to replace it.
			Pdeathsig: o.DrainSignal,
		},
	})
	h.started(m, pid)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", path, fdlimit.Explain(err))
	}
	g := &generation{n: n, pid: pid, state: starting, started: time.Now(), handoff: h}
	m.live[pid] = g
	if o.Ready == ReadyDelay {
		m.arm(g, o.ReadyDelay)
	} else {
		m.arm(g, o.ReadyTimeout)
	}
	m.emit(Event{Kind: WorkerStarted, Generation: n, PID: pid}, m.log.Info().Str("command", path))
	return g, nil
}

var devNullFile *os.File

func devNull() uintptr {
	if devNullFile == nil {
		f, err := os.Open(os.DevNull)
		if err != nil {
			return os.Stdin.Fd()
		}
		devNullFile = f
	}
	return devNullFile.Fd()
}

// arm sets g's one timer for its current state.
func (m *Master) arm(g *generation, d time.Duration) {
	if g.timer != nil {
		g.timer.Stop()
	}
	state := g.state
	g.timer = time.AfterFunc(d, func() { m.send(timerFired{g, state}) })
}

func (m *Master) timerFired(g *generation, armed genState) {
	if g.state != armed || m.live[g.pid] != g {
		return // the state moved on since the timer was set
	}
	switch g.state {
	case starting:
		if m.opts.Ready == ReadyDelay {
			m.ready(g)
			return
		}
		// It may already be answering requests: drain it like any old
		// generation rather than cut them.
		m.inflight.next = nil
		m.drain(g)
		m.finishReload(fmt.Errorf("new worker (generation %d, pid %d) was not ready after %s and was told to drain", g.n, g.pid, m.opts.ReadyTimeout))
	case draining:
		m.log.Warn().Int("gen", g.n).Int("pid", g.pid).Str("drain_timeout", m.opts.DrainTimeout.String()).
			Msg("worker still running after the drain timeout: killing its process group")
		killGroup(g.pid, syscall.SIGKILL)
	}
}

// ready makes g the serving generation and drains the one it replaces.
func (m *Master) ready(g *generation) {
	g.timer.Stop()
	g.state = serving
	g.readyAt = time.Now()
	m.emit(Event{Kind: WorkerReady, Generation: g.n, PID: g.pid, Took: g.readyAt.Sub(g.started)}, m.log.Info())
	old := m.current
	m.current = g
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
	m.emit(Event{Kind: Draining, Generation: g.n, PID: g.pid}, m.log.Info().Str("signal", signalName(m.opts.DrainSignal)))
	if err := syscall.Kill(g.pid, m.opts.DrainSignal); err != nil && !errors.Is(err, syscall.ESRCH) {
		m.log.Error().Err(err).Int("gen", g.n).Int("pid", g.pid).Msg("cannot signal worker to drain")
	}
}

// finishReload ends the reload under way, answers everyone waiting for it,
// and starts the queued one.
func (m *Master) finishReload(err error) {
	r := m.inflight
	m.inflight = nil
	took := time.Since(r.started)
	if err != nil && m.current != nil {
		err = fmt.Errorf("%w; generation %d is still serving", err, m.current.n)
	}
	if err == nil && r.next != nil {
		r.next.handoff.release() // it has taken over: its predecessor is gone
	}
	res := Result{Generation: m.currentGen(), Took: took, Err: err}
	m.lastReload = newReloadStatus(r, res)
	if err != nil {
		m.emit(Event{Kind: ReloadFailed, Err: err, Generation: res.Generation, Took: took, Trigger: r.kind}, m.log.Error().Err(err))
	} else {
		m.emit(Event{Kind: ReloadComplete, Generation: res.Generation, Took: took, Trigger: r.kind}, m.log.Info())
	}
	for _, w := range r.waiters {
		w <- res
	}

	switch {
	case m.stopping:
	case err != nil && r.kind == "start":
		m.exitErr = &StartupError{err}
		m.stop(false)
		return
	case err != nil && m.current == nil:
		m.crashed(time.Time{}, err)
	}
	if q := m.queued; q != nil && !m.stopping {
		m.queued = nil
		q.started = time.Now()
		m.start(q)
	}
}

// exited handles a reaped child: one of our workers, or an orphan that was
// re-parented to us.
func (m *Master) exited(c childExit) {
	g := m.live[c.pid]
	if g == nil {
		m.log.Debug().Int("pid", c.pid).Str("how", describeExit(c.status)).Msg("reaped orphan")
		return
	}
	delete(m.live, c.pid)
	g.handoff.release()
	if g.timer != nil {
		g.timer.Stop()
	}
	// The worker's group ends with it: whatever it started and left
	// behind would otherwise run on unsupervised.
	if killGroup(g.pid, syscall.SIGKILL) == nil {
		m.log.Warn().Int("gen", g.n).Int("pgid", g.pid).Msg("killed processes the worker left behind in its process group")
	}
	how := describeExit(c.status)
	m.emit(Event{Kind: WorkerExited, Generation: g.n, PID: g.pid},
		m.log.Info().Str("how", how).Str("ran", time.Since(g.started).Round(time.Millisecond).String()).Str("state", g.state.String()))

	switch g.state {
	case starting:
		m.inflight.next = nil
		m.finishReload(fmt.Errorf("new worker (generation %d, pid %d) %s before it was ready", g.n, g.pid, how))
	case serving:
		m.current = nil
		switch {
		case m.stopping:
		case m.inflight != nil && m.inflight.next != nil:
			m.log.Warn().Int("gen", g.n).Msg("serving worker exited during a reload: the new generation takes over when ready")
		default:
			m.crashed(g.readyAt, fmt.Errorf("worker (generation %d, pid %d) %s", g.n, g.pid, how))
		}
	case draining:
		if m.inflight != nil && m.inflight.old == g {
			m.finishReload(nil)
		}
	}
}

// crashed schedules a restart after a worker died with nothing else
// serving, backing off exponentially, or gives up past RestartLimit.
func (m *Master) crashed(readyAt time.Time, why error) {
	if !readyAt.IsZero() && time.Since(readyAt) >= StableAfter {
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
	m.restarts++
	m.log.Warn().Err(why).Int("crashes", m.crashes).Str("restart_in", delay.String()).Msg("worker crashed: restarting")
	m.restartDue = time.AfterFunc(delay, func() { m.send(restartReq{}) })
}

func (m *Master) notified(d notify.Datagram) {
	g := m.live[d.PID]
	if g == nil {
		m.log.Debug().Int("pid", d.PID).Msg("ignored notify message from a process that is not a worker's main process")
		return
	}
	if d.Err != nil {
		m.log.Warn().Err(d.Err).Int("gen", g.n).Int("pid", g.pid).Msg("worker sent a malformed notify message")
	}
	if s, ok := d.Message["STATUS"]; ok {
		g.status = s
		m.log.Info().Int("gen", g.n).Int("pid", g.pid).Str("status", s).Msg("worker status")
	}
	if d.Message["STOPPING"] == "1" {
		m.log.Info().Int("gen", g.n).Int("pid", g.pid).Msg("worker stopping")
	}
	if d.Message["READY"] == "1" {
		m.readyFrom(g.pid)
	}
}

// readyFrom handles a worker's own word that it is ready.
func (m *Master) readyFrom(pid int) {
	if g := m.live[pid]; g != nil && g.state == starting && m.opts.Ready == ReadyNotify {
		m.ready(g)
	}
}

// stop begins a graceful (drain) or fast (kill) stop of every generation.
// Run returns once all of them have been reaped.
func (m *Master) stop(fast bool) {
	if m.stopping && !fast {
		return
	}
	if !m.stopping {
		m.stopping = true
		m.emit(Event{Kind: Stopping}, m.log.Info().Bool("fast", fast).Int("workers", len(m.live)))
	}
	if m.restartDue != nil {
		m.restartDue.Stop()
		m.restartDue = nil
	}
	if q := m.queued; q != nil {
		m.queued = nil
		for _, w := range q.waiters {
			w <- Result{Generation: m.currentGen(), Err: ErrStopping}
		}
	}
	if m.inflight != nil {
		m.inflight.next = nil // drained below with the others
		m.finishReload(ErrStopping)
	}
	for _, g := range m.live {
		switch {
		case fast:
			killGroup(g.pid, syscall.SIGKILL)
		case g.state != draining:
			m.drain(g)
		}
	}
}

func (m *Master) forward(sig syscall.Signal) {
	if m.current == nil {
		m.log.Warn().Str("signal", signalName(sig)).Msg("no serving worker to forward the signal to")
		return
	}
	m.log.Info().Str("signal", signalName(sig)).Int("gen", m.current.n).Int("pid", m.current.pid).Msg("forwarding signal")
	syscall.Kill(m.current.pid, sig)
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
	ev.Msg(string(e.Kind))
	m.tellService(e)
	if m.opts.OnEvent != nil {
		m.opts.OnEvent(e)
	}
}

// killGroup signals the process group led by pid. It returns nil only if
// some process received the signal.
func killGroup(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}
