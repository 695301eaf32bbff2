package upgrader

import (
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/baton-sh/baton/internal/host"
)

// ErrNotRunning is the result of a request to a Master whose Run has ended.
var ErrNotRunning = errors.New("master is not running")

// ErrStopping is the result of a reload that a stop overtook.
var ErrStopping = errors.New("master is stopping")

// Master supervises the workers of one command. Create it with New, run it
// with Run, and steer it with Reload, Scale, Stop, StopNow and Signal from
// any goroutine.
//
// A Master reaps every child of the process (wait4(-1)), which makes it a
// correct subreaper and PID 1, and means one Master per process, with no
// other code in the process waiting for children of its own.
type Master struct {
	opts   Options
	log    zerolog.Logger
	events chan event
	done   chan struct{}
	env    env

	// Everything below is owned by the goroutine in Run.
	started time.Time
	lastGen int
	// current is the generation the service runs: the one the last
	// completed reload rolled out; nil before the first.
	current *generation
	slots   []*slot         // one per wanted worker, by index
	workers map[int]*worker // every live worker, by PID
	strays  map[int]*stray  // adopted processes that are not workers
	ended   map[workerKey]time.Time
	rollout *rollout // the reload under way
	queued  *rollout // the one coalesced behind it, not begun
	// finishing are reloads that have moved every slot and wait only for
	// the workers they told to drain, superseded by a newer one.
	finishing []*rollout
	scaling   *scaleReq
	// scaleWaiters wait for every slot to serve.
	scaleWaiters []chan<- Result
	stopping     bool
	stopKill     time.Time   // when what still runs gets SIGKILL at a stop
	socketsLost  socketsLost // see stop.go
	socketCheck  func()      // cancels the next look for lost sockets
	exitErr      error
	restarts     int // crash restarts begun
	lastReload   *ReloadStatus
	delay        stopDelay    // see stop.go
	hooks        hookState    // see hooks.go
	heals        healing      // see heal.go
	upgrade      upgradeState // see upgrade.go
	upgraded     time.Time    // when this image took over in place
	lastSuccess  time.Time    // when the last reload or replacement that succeeded ended
	handed       *HandOver    // what the old image handed this one, until Run

	// door is closed while the master hands over for an in-place upgrade:
	// requests sent meanwhile become pending (pending.go). It is read by
	// every sender, hence atomic.
	door    atomic.Pointer[chan struct{}]
	pending pendingRequests
}

// New checks opts and returns a Master ready to Run.
func New(opts Options) (*Master, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	return newMaster(opts, nil), nil
}

func newMaster(opts Options, e env) *Master {
	m := &Master{
		opts: opts,
		log:  opts.Log,
		// Unbuffered: a send either reaches the loop or, once Run has
		// ended, fails (see send); nothing is left unanswered in a buffer.
		events:  make(chan event),
		done:    make(chan struct{}),
		workers: map[int]*worker{},
		strays:  map[int]*stray{},
		ended:   map[workerKey]time.Time{},
		env:     e,
	}
	m.openDoor()
	return m
}

// Run starts the first generation and supervises workers until a stop has
// drained them all. It returns nil after a stop, a *StartupError when the
// first generation never became ready, and a *CrashLoopError when a worker
// crashed more than RestartLimit times in a row. Every child has been
// reaped when Run returns; the sockets are left open for the caller to
// close.
func (m *Master) Run() error {
	defer m.closeDone()
	m.started = time.Now()
	var handed *host.State
	if m.handed != nil {
		handed = &m.handed.Host
	}
	sys, err := startSystem(m, handed)
	if err != nil {
		return &StartupError{err}
	}
	// The loop's end is announced before sys.close (defers run last
	// first): from then on nobody waits for the loop, and the reaper,
	// still reaping what exits late, lets sys.close wait for the keeper's
	// exit. The closeDone above covers a Run that failed to start.
	defer sys.close()
	defer m.closeDone()
	m.env = sys
	if m.handed != nil {
		m.restore(m.handed)
		m.handed = nil
	} else {
		m.begin()
	}
	m.watchSockets()
	m.keepServiceAlive()
	m.loop()
	return m.exitErr
}

// closeDone tells every sender that the loop has ended (see send).
func (m *Master) closeDone() {
	select {
	case <-m.done:
	default:
		close(m.done)
	}
}

// loop handles events until a stop has reaped every worker, stray and hook.
func (m *Master) loop() {
	for !m.finished() {
		(<-m.events).apply(m)
		m.maybeUpgrade()
	}
}

// begin makes the slots and starts the first generation on them.
func (m *Master) begin() {
	for i := range m.opts.Workers {
		m.slots = append(m.slots, &slot{index: i})
	}
	m.beginReload(TriggerStart, nil)
}

func (m *Master) finished() bool {
	return m.stopping && len(m.workers) == 0 && len(m.strays) == 0 && m.hooks.running == nil
}

// send delivers an event to the loop, or drops it once Run has ended. While
// the master hands over for an in-place upgrade, a request that must not
// be lost (a reload or stop a signal asked for) is kept for the new image
// instead, and send reports false.
func (m *Master) send(e event) bool {
	select {
	case m.events <- e:
		return true
	case <-m.done:
		return false
	case <-*m.door.Load():
		m.pending.keep(e)
		return false
	}
}

// Reload asks for a new generation, giving why (TriggerSignal,
// TriggerControl, TriggerAdmin). The returned channel receives the result
// of the reload that covers this request: the one about to start, or, if
// one is already under way, the single one queued behind it (all requests
// made during a reload share it). A failed reload leaves the service as it
// was. Once Run has ended it receives ErrNotRunning.
func (m *Master) Reload(why Trigger) <-chan Result {
	c := make(chan Result, 1)
	if !m.send(reloadReq{why, c}) {
		answerOnce(c, Result{Err: ErrNotRunning})
	}
	return c
}

// Scale sets the number of workers to n (1 to MaxWorkers) without a reload:
// new slots start workers of the serving generation, removed slots (the
// highest) drain theirs. The returned channel receives the result once n
// workers serve, or why they do not. A scale asked for during a reload
// applies once it has ended.
func (m *Master) Scale(n int) <-chan Result {
	c := make(chan Result, 1)
	if err := CheckWorkers(n); err != nil {
		c <- Result{Err: err}
		return c
	}
	if !m.send(scaleReq{n: n, reply: c}) {
		answerOnce(c, Result{Err: ErrNotRunning})
	}
	return c
}

// ScaleBy moves the number of workers by delta (SIGTTIN +1, SIGTTOU -1),
// never below 1 nor above MaxWorkers.
func (m *Master) ScaleBy(delta int) { m.send(scaleReq{delta: delta}) }

// Stop drains every worker with the drain signal, kills what is left of
// them after the drain timeout, and makes Run return.
func (m *Master) Stop() { m.send(stopReq{fast: false}) }

// StopNow kills every worker's process group at once and makes Run return.
func (m *Master) StopNow() { m.send(stopReq{fast: true}) }

// Signal forwards sig to every serving worker's main process.
func (m *Master) Signal(sig syscall.Signal) { m.send(signalReq{sig}) }

// Status reports the master's state as of now.
func (m *Master) Status() (Status, error) {
	c := make(chan Status, 1)
	if !m.send(statusReq{c}) {
		return Status{}, ErrNotRunning
	}
	return <-c, nil
}

// emit logs one lifecycle step on ev and hands it to Options.OnEvent.
func (m *Master) emit(e Event, ev *zerolog.Event) {
	if e.Generation != 0 {
		ev = ev.Int("gen", e.Generation)
	}
	if e.PID != 0 {
		ev = ev.Int("pid", e.PID).Int("index", e.Index)
	}
	if e.Took != 0 {
		ev = ev.Str("took", e.Took.Round(time.Millisecond).String())
	}
	if e.Kind.hasTrigger() {
		ev = ev.Stringer("trigger", e.Trigger)
	}
	ev.Str("event", e.Kind.Key()).Msg(e.Kind.String())
	m.tellService(e)
	if m.opts.OnEvent != nil {
		m.opts.OnEvent(e)
	}
}

// selfPID is the master's own PID, for Status.
var selfPID = os.Getpid()

// answerOnce answers c unless it was answered already (a request kept as
// the master handed over for an in-place upgrade is).
func answerOnce(c chan Result, r Result) {
	select {
	case c <- r:
	default:
	}
}
