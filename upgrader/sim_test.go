package upgrader

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/baton-sh/baton/internal/host"
	"github.com/baton-sh/baton/notify"
)

// fakeEnv is the world as the loop sees it, with a clock that moves only
// when a test says so and processes that exist only as PIDs.
type fakeEnv struct {
	clock       time.Time
	wallStep    time.Duration // see monotonic
	nextPID     int
	timers      []*fakeTimer
	signals     []sent
	starts      []host.Start
	failStart   func(host.Start) error
	resolveErr  error
	release     string // the path the next resolve returns
	lost        []host.LostSocket
	tookOvers   map[int]int
	left        map[int][]string // processes left in a worker's group when its main process exits
	watched     map[int]bool     // groups watched after their main process exited
	killedLeft  map[int]bool     // groups killed after their main process exited
	forgotten   map[int]bool
	settledPIDs map[int]bool
	adopt       []host.Stray
	hooks       []host.Hook
	service     []host.ServiceState
	hooksKilled bool
	checks      []upgradeCheck // check runs asked for
	execState   []byte         // the state handed to the last exec
	execErr     error          // what exec returns (it returns only on failure)
	rss         map[int]int64  // resident memory by worker
	probes      int            // probes sent
	hooksLive   int            // hooks started whose hookDone has not been stepped
}

type upgradeCheck struct {
	path  string
	state []byte
}

type fakeTimer struct {
	at      time.Time
	e       event
	stopped bool
}

type sent struct {
	pid   int
	sig   syscall.Signal
	group bool
}

func newFakeEnv() *fakeEnv {
	return &fakeEnv{clock: time.Unix(1000, 0), nextPID: 100, release: "/srv/releases/1/server",
		tookOvers: map[int]int{}, left: map[int][]string{}, watched: map[int]bool{}, killedLeft: map[int]bool{},
		forgotten: map[int]bool{}, settledPIDs: map[int]bool{}, rss: map[int]int64{}}
}

func (f *fakeEnv) now() time.Time { return f.clock }

// monotonic follows the clock, less wallStep: how far the wall clock was
// set forward beyond the time that passed.
func (f *fakeEnv) monotonic() time.Duration { return f.clock.Sub(time.Unix(0, 0)) - f.wallStep }
func (f *fakeEnv) after(d time.Duration, e event) func() {
	t := &fakeTimer{at: f.clock.Add(d), e: e}
	f.timers = append(f.timers, t)
	return func() { t.stopped = true }
}
func (f *fakeEnv) resolve() (host.Release, error) {
	if f.resolveErr != nil {
		return host.Release{}, f.resolveErr
	}
	return host.Release{Path: f.release, Argv: []string{"server"}}, nil
}
func (f *fakeEnv) start(s host.Start) (int, error) {
	if f.failStart != nil {
		if err := f.failStart(s); err != nil {
			return 0, err
		}
	}
	f.nextPID++
	f.starts = append(f.starts, s)
	return f.nextPID, nil
}
func (f *fakeEnv) signal(pid int, sig syscall.Signal, group bool) error {
	f.signals = append(f.signals, sent{pid, sig, group})
	return nil
}
func (f *fakeEnv) mainExited(pid int, keep bool) []string {
	left := f.left[pid]
	if len(left) > 0 {
		if keep {
			f.watched[pid] = true
		} else {
			f.killedLeft[pid] = true
		}
	}
	return left
}
func (f *fakeEnv) forget(pid int)                  { f.forgotten[pid] = true }
func (f *fakeEnv) tookOver(pid int)                { f.tookOvers[pid]++ }
func (f *fakeEnv) settled(pid int)                 { f.settledPIDs[pid] = true }
func (f *fakeEnv) accepting(int) (int, string)     { return 0, "" }
func (f *fakeEnv) hook(h host.Hook)                { f.hooks = append(f.hooks, h); f.hooksLive++ }
func (f *fakeEnv) stopping(fast bool)              { f.hooksKilled = f.hooksKilled || fast }
func (f *fakeEnv) tellService(s host.ServiceState) { f.service = append(f.service, s) }
func (f *fakeEnv) memory(pid int) (int64, error)   { return f.rss[pid], nil }
func (f *fakeEnv) checkUpgrade(path string, args, env []string, state []byte, timeout time.Duration) {
	f.checks = append(f.checks, upgradeCheck{path, state})
}
func (f *fakeEnv) handOver(map[int]int) (host.State, []int, error) {
	return host.State{}, []int{7}, nil
}
func (f *fakeEnv) takeBack() {}
func (f *fakeEnv) exec(img *host.Image, args, env []string, keep []int, state []byte) error {
	f.execState = state
	return f.execErr
}
func (f *fakeEnv) probe(string) { f.probes++ }
func (f *fakeEnv) adopted() []host.Stray {
	a := f.adopt
	f.adopt = nil
	return a
}
func (f *fakeEnv) checkSockets() []host.LostSocket {
	l := f.lost
	f.lost = nil
	return l
}

// signalled reports whether sig was sent to pid (or its group).
// lastDrain is the last signal sent that is not SIGCONT, which it
// requires to be followed by a SIGCONT to the same target: a stopped
// worker must hear its drain signal.
func (f *fakeEnv) lastDrain(t *testing.T) sent {
	t.Helper()
	for i := len(f.signals) - 1; i >= 0; i-- {
		if x := f.signals[i]; x.sig != syscall.SIGCONT {
			if i+1 == len(f.signals) || f.signals[i+1] != (sent{x.pid, syscall.SIGCONT, x.group}) {
				t.Fatalf("%+v was not followed by SIGCONT to the same target: %+v", x, f.signals[i+1:])
			}
			return x
		}
	}
	t.Fatal("no signal sent")
	return sent{}
}

func (f *fakeEnv) signalled(pid int, sig syscall.Signal) bool {
	for _, s := range f.signals {
		if s.pid == pid && s.sig == sig {
			return true
		}
	}
	return false
}

// sim drives a Master's loop one event at a time and checks its
// invariants after each.
type sim struct {
	t   *testing.T
	m   *Master
	env *fakeEnv
	log *strings.Builder
}

func newSim(t *testing.T, tweak func(*Options)) *sim {
	t.Helper()
	log := &strings.Builder{}
	o := Options{
		Command: []string{"server"}, Env: []string{}, ShimPath: "/bin/true",
		Log: zerolog.New(log), ServiceNotify: "/run/fake.sock",
	}
	if tweak != nil {
		tweak(&o)
	}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	env := newFakeEnv()
	s := &sim{t: t, m: newMaster(o, env), env: env, log: log}
	s.m.started = env.clock
	s.m.begin()
	s.check()
	return s
}

func (s *sim) step(e event) {
	s.t.Helper()
	was := s.before()
	if _, ok := e.(hookDone); ok {
		s.env.hooksLive--
	}
	e.apply(s.m)
	s.m.maybeUpgrade() // as the loop does after every event
	s.check()
	if err := was.kept(s.m, s.env); err != nil {
		s.t.Fatalf("step broke a promise: %v\nstate: %s\nlog:\n%s", err, s.describe(), s.log)
	}
}

func (s *sim) check() {
	s.t.Helper()
	err := invariants(s.m)
	if err == nil {
		err = s.env.agrees(s.m)
	}
	if err != nil {
		s.t.Fatalf("invariant broken: %v\nstate: %s\nlog:\n%s", err, s.describe(), s.log)
	}
}

// stepStart is what a step may not undo, as it was before the step.
type stepStart struct {
	serving  []*worker // every slot's serving worker
	stopping bool
	starts   int
}

func (s *sim) before() stepStart {
	b := stepStart{stopping: s.m.stopping, starts: len(s.env.starts)}
	for _, sl := range s.m.slots {
		if sl.serving != nil {
			b.serving = append(b.serving, sl.serving)
		}
	}
	return b
}

// kept checks the promises about what a step may do: a serving worker
// stops serving only by its own death, by a worker that took its slot
// over, by its slot's removal or by a stop (so a reload or a replacement
// never lowers serving capacity); and once stopping, nothing starts.
func (b stepStart) kept(m *Master, f *fakeEnv) error {
	for _, w := range b.serving {
		if m.workers[w.pid] != w || w.state == serving || m.stopping || w.slot.retired {
			continue
		}
		if s := w.slot.serving; s == nil || s == w {
			return fmt.Errorf("worker %d stopped serving (%s) with nothing serving slot %d in its place", w.pid, w.state, w.slot.index)
		}
	}
	if b.stopping && len(f.starts) > b.starts {
		return fmt.Errorf("%d workers started while stopping", len(f.starts)-b.starts)
	}
	return nil
}

// agrees checks what the loop keeps about the env against the fake env:
// every deadline the loop keeps beside a timer (which an in-place upgrade
// hands over as time left) is that of a live timer for the same event;
// a draining worker's drain timer is live; at most one hook runs; and a
// stray told to drain has its SIGKILL armed or has had it.
func (f *fakeEnv) agrees(m *Master) error {
	timed := func(what string, e event, at time.Time) error {
		for _, t := range f.timers {
			if !t.stopped && t.e == e {
				if !t.at.Equal(at) {
					return fmt.Errorf("%s: the loop keeps %s, its timer fires at %s", what, at.Sub(f.clock), t.at.Sub(f.clock))
				}
				return nil
			}
		}
		return fmt.Errorf("%s: no live timer", what)
	}
	var errs []error
	for _, w := range m.sortedWorkers() {
		if w.state == draining && !w.killed {
			errs = append(errs, timed(fmt.Sprintf("worker %d's drain", w.pid), workerTimer{w, draining}, w.drainUntil))
		}
		if w.watchdog != nil {
			errs = append(errs, timed(fmt.Sprintf("worker %d's watchdog", w.pid), watchdogExpired{w, w.watchdogSeq}, w.watchdogDue))
		}
		if w.ageTimer != nil {
			errs = append(errs, timed(fmt.Sprintf("worker %d's --max-age", w.pid), ageReached{w}, w.ageDue))
		}
	}
	for _, s := range m.slots {
		if s.restartDue != nil {
			errs = append(errs, timed(fmt.Sprintf("slot %d's restart", s.index), restartDue{s}, s.restartAt))
		}
		if s.healRetry != nil {
			errs = append(errs, timed(fmt.Sprintf("slot %d's replacement retry", s.index), healRetry{s.serving, s.retryWhy}, s.retryAt))
		}
	}
	if m.heals.probe.tick != nil {
		errs = append(errs, timed("the probe", probeTick{}, m.heals.probe.tickAt))
	}
	if m.heals.memTick != nil {
		errs = append(errs, timed("the memory check", memoryCheck{}, m.heals.memAt))
	}
	for _, s := range m.sortedStrays() {
		switch {
		case s.kill != nil:
			errs = append(errs, timed(fmt.Sprintf("stray %d's SIGKILL", s.pid), strayKill{s}, s.killAt))
		case s.drained && !f.signalled(s.pid, syscall.SIGKILL):
			errs = append(errs, fmt.Errorf("stray %d was told to drain but has no SIGKILL armed or sent", s.pid))
		}
	}
	if f.hooksLive > 1 {
		errs = append(errs, fmt.Errorf("%d hooks run at once", f.hooksLive))
	}
	return errors.Join(errs...)
}

// advance moves the clock by d, firing every timer due on the way, in order.
func (s *sim) advance(d time.Duration) {
	s.t.Helper()
	end := s.env.clock.Add(d)
	for {
		sort.SliceStable(s.env.timers, func(i, j int) bool { return s.env.timers[i].at.Before(s.env.timers[j].at) })
		var due *fakeTimer
		for _, t := range s.env.timers {
			if !t.stopped && !t.at.After(end) {
				due = t
				break
			}
		}
		if due == nil {
			break
		}
		due.stopped = true
		s.env.clock = due.at
		s.step(due.e)
	}
	s.env.clock = end
}

func (s *sim) ready(pids ...int) {
	s.t.Helper()
	for _, pid := range pids {
		s.step(notified{pid, notify.Datagram{PID: pid, Message: notify.Message{"READY": "1"}}})
	}
}

func (s *sim) exit(pid, code int) {
	s.t.Helper()
	s.step(childExited{pid: pid, status: syscall.WaitStatus(code << 8)})
}

func (s *sim) reload() <-chan Result {
	c := make(chan Result, 1)
	s.step(reloadReq{TriggerSignal, c})
	return c
}

func (s *sim) scale(n int) <-chan Result {
	c := make(chan Result, 1)
	s.step(scaleReq{n: n, reply: c})
	return c
}

func (s *sim) status() Status {
	c := make(chan Status, 1)
	s.step(statusReq{c})
	return <-c
}

// describe is the state as "serving=G [index:gen:pid:state …] flags", the
// workers by generation, slot and PID; probation and held workers show
// their own state.
func (s *sim) describe() string {
	var parts []string
	for _, w := range s.m.sortedWorkers() {
		parts = append(parts, fmt.Sprintf("%d:%d:%d:%s", w.slot.index, w.gen.n, w.pid, w.state))
	}
	var restarts []string
	for _, sl := range s.m.slots {
		if sl.restartDue != nil {
			restarts = append(restarts, fmt.Sprint(sl.index))
		}
	}
	flags := ""
	if s.m.rollout != nil {
		flags += " rollout"
		if s.m.rollout.rollback {
			flags += "(back)"
		}
	}
	if s.m.queued != nil {
		flags += " queued"
	}
	if s.m.stopping {
		flags += " stopping"
	}
	if len(restarts) > 0 {
		flags += " restart:" + strings.Join(restarts, ",")
	}
	return fmt.Sprintf("serving=%d [%s]%s", s.m.currentGen(), strings.Join(parts, " "), flags)
}

func (s *sim) want(describe string) {
	s.t.Helper()
	if got := s.describe(); got != describe {
		s.t.Fatalf("state is\n  %s\nwant\n  %s\nlog:\n%s", got, describe, s.log)
	}
}

func result(t *testing.T, c <-chan Result) Result {
	t.Helper()
	select {
	case r := <-c:
		return r
	default:
		t.Fatal("no answer yet")
		return Result{}
	}
}

func pending(c <-chan Result) bool { return len(c) == 0 }

// invariants checks what the package doc promises after every event.
func invariants(m *Master) error {
	slotted := map[*worker]bool{}
	surge := 0
	for i, s := range m.slots {
		if s.index != i || s.retired {
			return fmt.Errorf("slot %d is filed at %d (retired %v)", s.index, i, s.retired)
		}
		if w := s.serving; w != nil {
			if m.workers[w.pid] != w || w.state != serving || w.slot != s {
				return fmt.Errorf("slot %d's serving worker %d is %s or not live", i, w.pid, w.state)
			}
			slotted[w] = true
		}
		if w := s.incoming; w != nil {
			if m.workers[w.pid] != w || !w.state.incoming() || w.slot != s {
				return fmt.Errorf("slot %d's incoming worker %d is %s or not live", i, w.pid, w.state)
			}
			slotted[w] = true
			if !s.empty() {
				surge++
			}
		}
		if !m.stopping && s.empty() && s.incoming == nil && s.restartDue == nil && !m.queuedFor(s) {
			return fmt.Errorf("slot %d: nothing serves, nothing starts, and no restart is scheduled", i)
		}
		if s.restartDue != nil && (!s.empty() || s.incoming != nil) {
			return fmt.Errorf("slot %d has a restart scheduled while it has a worker", i)
		}
	}
	if surge > m.surge() {
		return fmt.Errorf("%d workers start beside serving ones, more than the surge of %d", surge, m.surge())
	}
	for pid, w := range m.workers {
		if w.pid != pid {
			return fmt.Errorf("worker %d filed under pid %d", w.pid, pid)
		}
		switch {
		case w.state == draining:
			if w.timer == nil && !w.killed {
				return fmt.Errorf("worker %d drains with no drain timer", w.pid)
			}
		case m.stopping && !m.delay.active && !w.killed:
			return fmt.Errorf("worker %d is %s after the stop delay: not drained", w.pid, w.state)
		case !slotted[w] && !m.stopping:
			return fmt.Errorf("worker %d is %s but in no slot", w.pid, w.state)
		case w.state == held && (m.rollout == nil || m.rollout.moving(w) == nil) && !m.stopping:
			return fmt.Errorf("worker %d is held outside a rollout batch", w.pid)
		case m.delay.active && w.state == starting:
			return fmt.Errorf("worker %d is starting during the stop delay", w.pid)
		}
	}
	if r := m.rollout; r != nil {
		for _, mv := range r.batch {
			if mv.w == nil || mv.done {
				return fmt.Errorf("a batch move of slot %d has no incoming worker", mv.s.index)
			}
		}
		if r.rolled() && len(r.old) == 0 {
			return errors.New("a rollout is over but not finished")
		}
	}
	for _, r := range m.finishing {
		if !r.rolled() || len(r.old) == 0 {
			return errors.New("a superseded rollout has slots left to move, or nothing left to wait for")
		}
	}
	if m.stopping {
		for _, s := range m.slots {
			if s.restartDue != nil {
				return errors.New("a restart is scheduled while stopping")
			}
		}
		if m.queued != nil || m.rollout != nil || len(m.finishing) > 0 {
			return errors.New("a reload is under way while stopping")
		}
	}
	if m.delay.active {
		if !m.stopping {
			return errors.New("a stop delay runs while not stopping")
		}
		if !m.delay.passed && m.delay.cancel == nil {
			return errors.New("a stop delay runs with no timer to end it")
		}
		if m.delay.passed && !m.stoppingHookBusy() {
			return errors.New("the stop delay is over but the drain has not begun")
		}
	}
	if len(m.heals.waiting) > 0 && !m.stopping && !m.healBlocked() {
		return fmt.Errorf("%d replacements wait with nothing under way to wait for", len(m.heals.waiting))
	}
	if m.hooks.waiting != nil && m.hooks.running == nil {
		return errors.New("a hook waits with none running")
	}
	for pid, s := range m.strays {
		if s.pid != pid {
			return fmt.Errorf("stray %d filed under %d", s.pid, pid)
		}
	}
	healing := 0
	for _, s := range m.slots {
		if s.replacing == nil {
			continue
		}
		if s.replacing.trigger.heals() {
			healing++
		}
		if s.incoming == nil && !m.stopping {
			return fmt.Errorf("slot %d's replacement (%s) has no incoming worker", s.index, s.replacing.trigger)
		}
	}
	if healing > 1 {
		return fmt.Errorf("%d self-healing replacements run at once", healing)
	}
	return nil
}

// queuedFor reports whether the rollout under way will start a worker
// for s.
func (m *Master) queuedFor(s *slot) bool {
	if r := m.rollout; r != nil {
		for _, mv := range r.todo {
			if mv.s == s {
				return true
			}
		}
	}
	return false
}

// up starts a sim whose first generation serves: workers 101, 102, … in
// slots 0, 1, ….
func up(t *testing.T, tweak func(*Options)) *sim {
	t.Helper()
	s := newSim(t, tweak)
	for i := range s.m.slots {
		s.ready(101 + i)
	}
	if s.m.currentGen() != 1 || s.m.rollout != nil {
		t.Fatalf("first generation not serving: %s", s.describe())
	}
	return s
}
