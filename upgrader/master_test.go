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

	"github.com/baton-sh/baton/notify"
)

// fakeEnv is the world as the loop sees it, with a clock that moves only
// when a test says so and processes that exist only as PIDs.
type fakeEnv struct {
	clock     time.Time
	nextPID   int
	timers    []*fakeTimer
	signals   []sent
	failStart error
	groups    map[int]int // pid → process group, for members other than a main process
	lost      *socketsLost
	released  map[int]int  // pid → release count
	alive     map[int]bool // process groups with members besides a reaped main process
	hooks     []hookRun    // every hook started, in order
}

type fakeTimer struct {
	at      time.Time
	e       any
	stopped bool
}

type sent struct {
	pid   int
	sig   syscall.Signal
	group bool
}

func (f *fakeEnv) now() time.Time { return f.clock }
func (f *fakeEnv) after(d time.Duration, e any) func() {
	t := &fakeTimer{at: f.clock.Add(d), e: e}
	f.timers = append(f.timers, t)
	return func() { t.stopped = true }
}
func (f *fakeEnv) start(n int) (int, error) {
	if f.failStart != nil {
		return 0, f.failStart
	}
	f.nextPID++
	return f.nextPID, nil
}
func (f *fakeEnv) signal(pid int, sig syscall.Signal, group bool) error {
	f.signals = append(f.signals, sent{pid, sig, group})
	return nil
}
func (f *fakeEnv) tookOver(pid int)         { f.released[pid]++ }
func (f *fakeEnv) gone(pid int)             { f.released[pid]++ }
func (f *fakeEnv) groupAlive(pgid int) bool { return f.alive[pgid] }
func (f *fakeEnv) processGroup(pid int) int {
	if g, ok := f.groups[pid]; ok {
		return g
	}
	return pid
}
func (f *fakeEnv) accepting(int) (int, string) { return 0, "" }
func (f *fakeEnv) settled(int)                 {}
func (f *fakeEnv) hook(h hookRun)              { f.hooks = append(f.hooks, h) }
func (f *fakeEnv) strays() int                 { return 0 }
func (f *fakeEnv) stopping(bool)               {}
func (f *fakeEnv) daemonized(int) string       { return "" }
func (f *fakeEnv) checkSockets(by int) *socketsLost {
	l := f.lost
	f.lost = nil
	if l != nil {
		l.by = by
	}
	return l
}

// signalled reports whether sig was sent to pid (or its group).
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
	t    *testing.T
	m    *Master
	env  *fakeEnv
	log  *strings.Builder
	done []Result
}

func newSim(t *testing.T, tweak func(*Options)) *sim {
	t.Helper()
	log := &strings.Builder{}
	o := Options{
		Command: []string{"server"}, Env: []string{}, ShimPath: "/bin/true",
		Log: zerolog.New(log),
	}
	if tweak != nil {
		tweak(&o)
	}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	env := &fakeEnv{clock: time.Unix(1000, 0), nextPID: 100, groups: map[int]int{}, released: map[int]int{}, alive: map[int]bool{}}
	s := &sim{t: t, m: newMaster(o, env), env: env, log: log}
	s.m.started = env.clock
	s.m.beginReload(TriggerStart, nil)
	s.check()
	return s
}

func (s *sim) step(e any) {
	s.t.Helper()
	s.m.handle(e)
	s.check()
}

func (s *sim) check() {
	s.t.Helper()
	if err := invariants(s.m); err != nil {
		s.t.Fatalf("invariant broken: %v\nstate: %s\nlog:\n%s", err, s.describe(), s.log)
	}
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

func (s *sim) ready(pid int) {
	s.t.Helper()
	s.step(notify.Datagram{PID: pid, Message: notify.Message{"READY": "1"}})
}

func (s *sim) exit(pid, code int) {
	s.t.Helper()
	s.step(childExit{pid: pid, status: syscall.WaitStatus(code << 8)})
}

func (s *sim) reload() <-chan Result {
	c := make(chan Result, 1)
	s.step(reloadReq{c})
	return c
}

func (s *sim) status() Status {
	c := make(chan Status, 1)
	s.step(statusReq{c})
	return <-c
}

// workers lists the live generations as "gen:pid:state", by generation.
func (s *sim) describe() string {
	st := s.m.status()
	var parts []string
	for _, w := range st.Workers {
		parts = append(parts, fmt.Sprintf("%d:%d:%s", w.Generation, w.PID, w.State))
	}
	return fmt.Sprintf("serving=%d workers=[%s] inflight=%v queued=%v stopping=%v restartDue=%v",
		st.Generation, strings.Join(parts, " "), s.m.inflight != nil, s.m.queued != nil, s.m.stopping, s.m.restartDue != nil)
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
		t.Fatal("the reload has not answered")
		return Result{}
	}
}

func pending(c <-chan Result) bool { return len(c) == 0 }

// invariants checks what the package doc promises after every event.
func invariants(m *Master) error {
	var newOnes, servingOnes int
	for pid, g := range m.live {
		if g.pid != pid {
			return fmt.Errorf("generation %d filed under pid %d, has %d", g.n, pid, g.pid)
		}
		switch g.state {
		case starting, probation:
			newOnes++
			if !m.stopping && (m.inflight == nil || m.inflight.next != g) {
				return fmt.Errorf("generation %d is %s outside the reload under way", g.n, g.state)
			}
		case serving:
			servingOnes++
			if m.current != g {
				return fmt.Errorf("generation %d serves but is not the current one", g.n)
			}
		case draining:
			if g.timer == nil && !g.killed {
				return fmt.Errorf("generation %d drains with no drain timer", g.n)
			}
		}
	}
	if newOnes > 1 {
		return fmt.Errorf("%d generations starting at once", newOnes)
	}
	if servingOnes > 1 {
		return fmt.Errorf("%d generations serving at once", servingOnes)
	}
	// During a stop the current generation drains like the others.
	if m.current != nil && (m.live[m.current.pid] != m.current || (m.current.state != serving && !(m.stopping && m.current.state == draining))) {
		return fmt.Errorf("current generation %d is %s or not live", m.current.n, m.current.state)
	}
	if !m.stopping && m.current == nil && m.inflight == nil && m.restartDue == nil {
		return errors.New("nothing serves, nothing starts, and no restart is scheduled")
	}
	if m.stopping && (m.restartDue != nil || m.queued != nil || m.inflight != nil) {
		return errors.New("a start is pending while stopping")
	}
	// The stop delay: nothing starts, what served serves on, and it ends
	// once its time has passed and the on-stopping hook has ended.
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
	for _, g := range m.live {
		if m.delay.active && g.state == starting {
			return fmt.Errorf("generation %d is starting during the stop delay", g.n)
		}
		if m.stopping && !m.delay.active && g.state != draining && !g.killed {
			return fmt.Errorf("generation %d is %s after the stop delay: not drained", g.n, g.state)
		}
	}
	if m.hooks.waiting != nil && m.hooks.running == nil {
		return errors.New("a hook waits with none running")
	}
	return nil
}

// up starts a sim whose first generation (pid 101) serves.
func up(t *testing.T, tweak func(*Options)) *sim {
	s := newSim(t, tweak)
	s.ready(101)
	s.want("serving=1 workers=[1:101:serving] inflight=false queued=false stopping=false restartDue=false")
	return s
}

func TestReloadHandsOver(t *testing.T) {
	s := up(t, nil)
	r := s.reload()
	s.want("serving=1 workers=[1:101:serving 2:102:starting] inflight=true queued=false stopping=false restartDue=false")
	s.ready(102)
	s.want("serving=2 workers=[1:101:draining 2:102:serving] inflight=true queued=false stopping=false restartDue=false")
	if !s.env.signalled(101, syscall.SIGTERM) || !pending(r) {
		t.Fatal("old generation not told to drain, or the reload answered before it was gone")
	}
	s.exit(101, 0)
	if res := result(t, r); res.Err != nil || res.Generation != 2 {
		t.Fatalf("reload: %+v", res)
	}
	if s.env.released[102] != 1 {
		t.Fatalf("generation 2's handoff released %d times before it exits, want 1", s.env.released[102])
	}
	if st := s.status(); st.LastReload.Kind != "reload" || !st.LastReload.OK || st.Restarts != 0 {
		t.Fatalf("status: %+v", st.LastReload)
	}
}

// TestNewGenerationDiesWhileOldDrains is the outage of issue 9: the new
// generation took over, then died while a long request kept the old one
// draining. The reload fails, a restart is scheduled at once, and the
// restart brings a worker back.
func TestNewGenerationDiesWhileOldDrains(t *testing.T) {
	s := up(t, nil)
	r := s.reload()
	s.ready(102)
	s.exit(102, 1)
	res := result(t, r)
	if res.Err == nil || !strings.Contains(res.Err.Error(), "after it was ready, while generation 1 drained") {
		t.Fatalf("reload result %+v, want a failure naming the new generation's death", res)
	}
	s.want("serving=0 workers=[1:101:draining] inflight=false queued=false stopping=false restartDue=true")
	s.exit(101, 0) // the old one finishes its long request
	s.want("serving=0 workers=[] inflight=false queued=false stopping=false restartDue=true")
	s.advance(DefaultRestartBackoff)
	s.want("serving=0 workers=[3:103:starting] inflight=true queued=false stopping=false restartDue=false")
	s.ready(103)
	st := s.status()
	if st.Generation != 3 || st.Restarts != 1 || st.LastReload.Kind != "restart" || !st.LastReload.OK {
		t.Fatalf("status after the restart: generation %d, restarts %d, last %+v", st.Generation, st.Restarts, st.LastReload)
	}
}

func TestFailedReloadsKeepTheOldGeneration(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    func(*Options)
		fail    func(s *sim)
		wantErr string
	}{
		{"exits before ready", nil, func(s *sim) { s.exit(102, 1) }, "exited with status 1 before it was ready"},
		{"never ready", nil, func(s *sim) { s.advance(DefaultReadyTimeout) }, "was not ready after 1m0s"},
		{"cannot start", nil, func(s *sim) {}, "cannot start generation 2"},
		{"dies within min-ready", func(o *Options) { o.MinReady = 5 * time.Second },
			func(s *sim) { s.ready(102); s.advance(time.Second); s.exit(102, 2) }, "within --min-ready 5s"},
		{"says STOPPING=1 within min-ready", func(o *Options) { o.MinReady = 5 * time.Second },
			func(s *sim) {
				s.ready(102)
				s.step(notify.Datagram{PID: 102, Message: notify.Message{"STOPPING": "1"}})
			}, "said STOPPING=1 within --min-ready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := up(t, tc.opts)
			if tc.name == "cannot start" {
				s.env.failStart = errors.New("no such file")
			}
			r := s.reload()
			tc.fail(s)
			res := result(t, r)
			if res.Err == nil || !strings.Contains(res.Err.Error(), tc.wantErr) || !strings.Contains(res.Err.Error(), "generation 1 is still serving") {
				t.Fatalf("reload result %v, want an error with %q that says generation 1 serves", res.Err, tc.wantErr)
			}
			if s.m.current == nil || s.m.current.n != 1 {
				t.Fatalf("generation 1 no longer serves: %s", s.describe())
			}
			if s.env.signalled(101, syscall.SIGTERM) {
				t.Fatal("the old generation was told to drain although the reload failed")
			}
			if st := s.status(); st.LastReload.OK || st.Restarts != 0 {
				t.Fatalf("status: %+v restarts %d", st.LastReload, st.Restarts)
			}
		})
	}
}

func TestMinReadyPromotesAfterTheWindow(t *testing.T) {
	s := up(t, func(o *Options) { o.MinReady = 5 * time.Second })
	r := s.reload()
	s.ready(102)
	s.want("serving=1 workers=[1:101:serving 2:102:probation] inflight=true queued=false stopping=false restartDue=false")
	s.advance(4 * time.Second)
	if s.env.signalled(101, syscall.SIGTERM) {
		t.Fatal("old generation drained before --min-ready passed")
	}
	s.advance(time.Second)
	s.want("serving=2 workers=[1:101:draining 2:102:serving] inflight=true queued=false stopping=false restartDue=false")
	s.exit(101, 0)
	if res := result(t, r); res.Err != nil {
		t.Fatal(res.Err)
	}
}

func TestReloadsDuringAReloadCoalesce(t *testing.T) {
	s := up(t, nil)
	first := s.reload()
	second, third := s.reload(), s.reload()
	s.want("serving=1 workers=[1:101:serving 2:102:starting] inflight=true queued=true stopping=false restartDue=false")
	s.ready(102)
	s.exit(101, 0)
	if res := result(t, first); res.Err != nil || res.Generation != 2 {
		t.Fatalf("first: %+v", res)
	}
	s.want("serving=2 workers=[2:102:serving 3:103:starting] inflight=true queued=false stopping=false restartDue=false")
	s.ready(103)
	s.exit(102, 0)
	for _, c := range []<-chan Result{second, third} {
		if res := result(t, c); res.Err != nil || res.Generation != 3 {
			t.Fatalf("queued: %+v", res)
		}
	}
}

func TestStopDuringTheDrainPhaseReportsTheReloadDone(t *testing.T) {
	s := up(t, nil)
	r := s.reload()
	s.ready(102)
	s.step(stopReq{})
	if res := result(t, r); res.Err != nil || res.Generation != 2 {
		t.Fatalf("reload overtaken by a stop after the new generation took over: %+v", res)
	}
	if !s.env.signalled(102, syscall.SIGTERM) {
		t.Fatal("the new generation was not drained by the stop")
	}
}

func TestStopDuringAStartFailsTheReload(t *testing.T) {
	s := up(t, nil)
	r := s.reload()
	q := s.reload()
	s.step(stopReq{})
	for _, c := range []<-chan Result{r, q} {
		if res := result(t, c); !errors.Is(res.Err, ErrStopping) {
			t.Fatalf("reload overtaken by a stop: %+v", res)
		}
	}
	if !s.env.signalled(101, syscall.SIGTERM) || !s.env.signalled(102, syscall.SIGTERM) {
		t.Fatal("not every generation was drained")
	}
	s.exit(101, 0)
	s.exit(102, 0)
	if len(s.m.live) != 0 {
		t.Fatal("workers left")
	}
	if late := s.reload(); !errors.Is(result(t, late).Err, ErrStopping) {
		t.Fatal("a reload during the stop started something")
	}
}

func TestDrainTimeoutKillsTheGroup(t *testing.T) {
	s := up(t, func(o *Options) { o.DrainTimeout = 2 * time.Second })
	s.reload()
	s.ready(102)
	s.advance(2 * time.Second)
	for _, x := range s.env.signals {
		if x.pid == 101 && x.sig == syscall.SIGKILL && x.group {
			return
		}
	}
	t.Fatalf("no SIGKILL to generation 1's group after the drain timeout: %v", s.env.signals)
}

// With --drain-group a shell wrapper exits on TERM before the server it
// started has finished: the generation ends with its process group, not
// with its main process, so nothing is killed mid-request.
func TestDrainEndsWithTheProcessGroup(t *testing.T) {
	s := up(t, func(o *Options) { o.DrainGroup = true; o.DrainTimeout = 5 * time.Second })
	r := s.reload()
	s.ready(102)
	if x := s.env.signals[len(s.env.signals)-1]; x.pid != 101 || !x.group {
		t.Fatalf("drain signal %+v, want to generation 1's group", x)
	}
	s.env.alive[101] = true
	s.exit(101, 143) // the shell
	s.want("serving=2 workers=[1:101:draining 2:102:serving] inflight=true queued=false stopping=false restartDue=false")
	s.env.alive[101] = false
	s.exit(555, 0) // the server, re-parented to the master and reaped
	if res := result(t, r); res.Err != nil {
		t.Fatal(res.Err)
	}
	for _, x := range s.env.signals {
		if x.sig == syscall.SIGKILL {
			t.Fatalf("SIGKILL sent: %+v", x)
		}
	}
	// Past the drain timeout the group is killed, and the generation ends
	// once it is empty even if no member is ours to reap.
	r = s.reload()
	s.ready(103)
	s.env.alive[102] = true
	s.exit(102, 143)
	s.advance(5 * time.Second)
	if !s.env.signalled(102, syscall.SIGKILL) {
		t.Fatal("no SIGKILL at the drain timeout")
	}
	s.env.alive[102] = false
	s.advance(time.Second)
	if res := result(t, r); res.Err != nil {
		t.Fatal(res.Err)
	}
}

// Without --drain-group only the main process hears the drain signal; a
// helper it started in its group hears it once the main process has
// exited, instead of holding the drain until SIGKILL.
func TestGroupHearsTheDrainOnceItsMainProcessHasExited(t *testing.T) {
	s := up(t, nil)
	r := s.reload()
	s.ready(102)
	if x := s.env.signals[len(s.env.signals)-1]; x.pid != 101 || x.group {
		t.Fatalf("drain signal %+v, want generation 1's main process only", x)
	}
	s.env.alive[101] = true
	s.exit(101, 0)
	if x := s.env.signals[len(s.env.signals)-1]; x.pid != 101 || !x.group || x.sig != syscall.SIGTERM {
		t.Fatalf("after its main process exited, last signal %+v, want TERM to generation 1's group", x)
	}
	s.env.alive[101] = false
	s.exit(555, 0)
	if res := result(t, r); res.Err != nil {
		t.Fatal(res.Err)
	}
}

func TestCrashesBackOffThenGiveUp(t *testing.T) {
	s := up(t, func(o *Options) { o.RestartLimit = 3 })
	pid := 101
	for i, backoff := range []time.Duration{100, 200, 400} {
		s.exit(pid, 1)
		s.advance(backoff*time.Millisecond - time.Millisecond)
		if s.m.inflight != nil {
			t.Fatalf("crash %d: restarted before its %dms backoff", i+1, backoff)
		}
		s.advance(time.Millisecond)
		pid++
		s.want(fmt.Sprintf("serving=0 workers=[%d:%d:starting] inflight=true queued=false stopping=false restartDue=false", i+2, pid))
		s.ready(pid)
	}
	s.exit(pid, 1)
	var loop *CrashLoopError
	if !errors.As(s.m.exitErr, &loop) || loop.Crashes != 4 || !s.m.stopping {
		t.Fatalf("after 4 crashes: exitErr %v, stopping %v", s.m.exitErr, s.m.stopping)
	}
	if st := s.status(); st.Restarts != 3 {
		t.Fatalf("restarts %d, want 3", st.Restarts)
	}
}

func TestFirstGenerationFailing(t *testing.T) {
	s := newSim(t, nil)
	s.exit(101, 3)
	var se *StartupError
	if !errors.As(s.m.exitErr, &se) || !s.m.stopping {
		t.Fatalf("exitErr %v, stopping %v", s.m.exitErr, s.m.stopping)
	}
}

func TestNotifyAccess(t *testing.T) {
	for _, tc := range []struct {
		access NotifyAccess
		from   int
		ready  bool
	}{
		{NotifyAll, 101, true},
		{NotifyAll, 555, true}, // a child in its process group: systemd-notify from a wrapper
		{NotifyAll, 777, false},
		{NotifyMain, 101, true},
		{NotifyMain, 555, false},
	} {
		s := newSim(t, func(o *Options) { o.NotifyAccess = tc.access })
		s.env.groups[555] = 101
		s.env.groups[777] = 999
		s.ready(tc.from)
		if got := s.m.current != nil; got != tc.ready {
			t.Errorf("access %d, READY=1 from %d: ready %v, want %v; log:\n%s", tc.access, tc.from, got, tc.ready, s.log)
		}
	}
}

func TestStatusLinesAreRateLimited(t *testing.T) {
	s := up(t, nil)
	for i := 0; i < 1000; i++ {
		s.step(notify.Datagram{PID: 101, Message: notify.Message{"STATUS": fmt.Sprint("busy ", i)}})
	}
	if n := strings.Count(s.log.String(), `"worker status"`); n != 1 {
		t.Fatalf("%d status lines logged for 1000 messages within a second, want 1", n)
	}
	s.advance(time.Second)
	s.step(notify.Datagram{PID: 101, Message: notify.Message{"STATUS": "idle"}})
	if !strings.Contains(s.log.String(), `"suppressed":999`) {
		t.Fatalf("the next status line does not count the suppressed ones:\n%s", s.log)
	}
	if st := s.status(); st.Workers[0].Status != "idle" {
		t.Fatalf("status shows %q", st.Workers[0].Status)
	}
}

func TestStrangersNotifyMessagesAreRateLimited(t *testing.T) {
	s := up(t, nil)
	for i := 0; i < 1000; i++ {
		s.ready(777)
	}
	if n := strings.Count(s.log.String(), `"ignored a notify message"`); n != 1 {
		t.Fatalf("%d lines for 1000 messages from a stranger within a second, want 1", n)
	}
	s.advance(time.Second)
	s.ready(777)
	if !strings.Contains(s.log.String(), `"suppressed":999`) {
		t.Fatalf("the next line does not count the suppressed ones:\n%s", s.log)
	}
}

func TestLostSocketIsRestored(t *testing.T) {
	s := up(t, nil)
	r := s.reload()
	s.ready(102)
	s.env.lost = &socketsLost{names: []string{"http"}}
	s.exit(101, 0) // the old generation shut the shared socket down as it drained
	if res := result(t, r); res.Err != nil {
		t.Fatal(res.Err)
	}
	s.want("serving=2 workers=[2:102:serving 3:103:starting] inflight=true queued=false stopping=false restartDue=false")
	if !strings.Contains(s.log.String(), "shut down a listening socket") || !strings.Contains(s.log.String(), `"gen":1`) {
		t.Fatalf("no error naming generation 1:\n%s", s.log)
	}
	if st := s.status(); st.LastReload.Kind != "reload" {
		t.Fatal(st.LastReload)
	}
	s.ready(103)
	s.exit(102, 0)
	if st := s.status(); st.LastReload.Kind != "restore" || !st.LastReload.OK {
		t.Fatalf("last reload %+v, want an ok restore", st.LastReload)
	}
}

// TestEveryStateAndEvent puts the master in each reachable situation and
// applies each event to it, checking the invariants after every step.
func TestEveryStateAndEvent(t *testing.T) {
	situations := map[string]func(*sim){
		"first starting":      func(s *sim) {},
		"serving":             func(s *sim) { s.ready(101) },
		"reload starting":     func(s *sim) { s.ready(101); s.reload() },
		"reload queued":       func(s *sim) { s.ready(101); s.reload(); s.reload() },
		"old draining":        func(s *sim) { s.ready(101); s.reload(); s.ready(102) },
		"probation":           func(s *sim) { s.m.opts.MinReady = time.Second; s.ready(101); s.reload(); s.ready(102) },
		"restart scheduled":   func(s *sim) { s.ready(101); s.exit(101, 1) },
		"restart starting":    func(s *sim) { s.ready(101); s.exit(101, 1); s.advance(time.Second) },
		"stopping":            func(s *sim) { s.ready(101); s.reload(); s.step(stopReq{}) },
		"new died, old drain": func(s *sim) { s.ready(101); s.reload(); s.ready(102); s.exit(102, 1) },
		"stop delay": func(s *sim) {
			s.m.opts.StopDelay = time.Minute
			s.m.opts.MinReady = time.Second
			s.ready(101)
			s.reload()
			s.ready(102)
			s.step(stopReq{})
		},
		"on-stopping runs": func(s *sim) {
			s.m.opts.OnReady, s.m.opts.OnStopping = []string{"r"}, []string{"d"}
			s.ready(101)
			s.hookEnds(nil)
			s.step(stopReq{})
		},
		"on-ready runs": func(s *sim) { s.m.opts.OnReady = []string{"r"}; s.ready(101); s.reload(); s.ready(102) },
	}
	events := map[string]func(*sim){
		"HUP":       func(s *sim) { s.reload() },
		"TERM":      func(s *sim) { s.step(stopReq{}) },
		"QUIT":      func(s *sim) { s.step(stopReq{fast: true}) },
		"USR2":      func(s *sim) { s.step(signalReq{syscall.SIGUSR2}) },
		"stranger":  func(s *sim) { s.ready(999) },
		"orphan":    func(s *sim) { s.exit(999, 0) },
		"lost sock": func(s *sim) { s.env.lost = &socketsLost{names: []string{"x"}}; s.exit(999, 0) },
		"time":      func(s *sim) { s.advance(2 * time.Minute) },
		"hook ends": func(s *sim) {
			if s.m.hooks.running != nil {
				s.hookEnds(nil)
			}
		},
	}
	for pid := 101; pid <= 104; pid++ {
		events[fmt.Sprint("ready ", pid)] = func(s *sim) { s.ready(pid) }
		events[fmt.Sprint("exit ", pid)] = func(s *sim) { s.exit(pid, 1) }
		events[fmt.Sprint("STOPPING ", pid)] = func(s *sim) {
			s.step(notify.Datagram{PID: pid, Message: notify.Message{"STOPPING": "1"}})
		}
	}
	for sn, setup := range situations {
		for en, event := range events {
			t.Run(sn+"/"+en, func(t *testing.T) {
				s := newSim(t, nil)
				setup(s)
				event(s)
				// Whatever happened, the master can still be stopped and
				// ends with nothing live once every worker exits.
				s.step(stopReq{})
				s.step(stopReq{}) // a second one ends any stop delay
				for pid := range s.m.live {
					s.exit(pid, 0)
				}
				for s.m.hooks.running != nil {
					s.hookEnds(nil)
				}
				if len(s.m.live) != 0 || !s.m.stopping || s.m.delay.active {
					t.Fatalf("after stop: %s", s.describe())
				}
			})
		}
	}
}

// hookEnds ends the running hook, as the env reports it.
func (s *sim) hookEnds(err error) {
	s.t.Helper()
	r := s.m.hooks.running
	if r == nil {
		s.t.Fatalf("no hook runs: %s", s.describe())
	}
	s.step(hookDone{run: *r, pid: 900, err: err})
}

// hooksRun lists the hooks started so far as "kind:gen:pid".
func (s *sim) hooksRun() string {
	var parts []string
	for _, h := range s.env.hooks {
		parts = append(parts, fmt.Sprintf("%s:%d:%d", h.kind, h.gen, h.pid))
	}
	return strings.Join(parts, " ")
}

func TestStopDelay(t *testing.T) {
	delay := func(o *Options) { o.StopDelay = 5 * time.Second }
	for _, tc := range []struct {
		name string
		opts func(*Options)
		// during acts within the delay; drained says whether the drain
		// must have begun right after it.
		during  func(s *sim)
		drained bool
	}{
		{"serves through the delay, then drains", delay, func(s *sim) { s.advance(5 * time.Second) }, true},
		{"not before the delay has passed", delay, func(s *sim) { s.advance(4999 * time.Millisecond) }, false},
		{"a second TERM skips the rest", delay, func(s *sim) { s.advance(time.Second); s.step(stopReq{}) }, true},
		{"HUP during the delay starts nothing", delay, func(s *sim) {
			if r := s.reload(); !errors.Is(result(s.t, r).Err, ErrStopping) {
				s.t.Fatal("a reload during the stop delay did not fail with ErrStopping")
			}
		}, false},
		{"the drain waits for on-stopping", func(o *Options) { delay(o); o.OnStopping = []string{"deregister"} },
			func(s *sim) { s.advance(time.Minute) }, false},
		{"and begins when it ends", func(o *Options) { delay(o); o.OnStopping = []string{"deregister"} },
			func(s *sim) { s.advance(time.Minute); s.hookEnds(errors.New("exited with status 1")) }, true},
		{"on-stopping alone delays until it ends", func(o *Options) { o.OnStopping = []string{"deregister"} },
			func(s *sim) { s.hookEnds(nil) }, true},
		{"a failed worker during the delay is not restarted", delay, func(s *sim) {
			s.exit(101, 1)
			s.advance(time.Minute)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := up(t, tc.opts)
			s.step(stopReq{})
			if st := s.status(); !st.Stopping || st.StopPhase != "delay" {
				t.Fatalf("status in the stop delay: stopping %v, phase %q", st.Stopping, st.StopPhase)
			}
			if s.env.signalled(101, syscall.SIGTERM) {
				t.Fatal("drained at once despite the stop delay")
			}
			tc.during(s)
			if got := s.env.signalled(101, syscall.SIGTERM); got != tc.drained && s.m.live[101] != nil {
				t.Fatalf("drain begun: %v, want %v; %s\nlog:\n%s", got, tc.drained, s.describe(), s.log)
			}
			s.step(stopReq{})
			s.exit(101, 0)
			if len(s.m.live) != 0 || s.m.status().StopPhase != "drain" {
				t.Fatalf("after the drain: %s", s.describe())
			}
		})
	}
}

func TestStopDelayWithAReloadUnderWay(t *testing.T) {
	s := up(t, func(o *Options) { o.StopDelay = 5 * time.Second })
	r := s.reload()
	s.step(stopReq{})
	if res := result(t, r); !errors.Is(res.Err, ErrStopping) {
		t.Fatalf("reload overtaken by a stop: %+v", res)
	}
	// The starting generation serves nobody yet: it drains at once; the
	// serving one serves through the delay.
	s.want("serving=1 workers=[1:101:serving 2:102:draining] inflight=false queued=false stopping=true restartDue=false")
	s.ready(102) // too late: it drains
	s.advance(5 * time.Second)
	s.want("serving=1 workers=[1:101:draining 2:102:draining] inflight=false queued=false stopping=true restartDue=false")
}

func TestQuitDuringTheStopDelayKills(t *testing.T) {
	s := up(t, func(o *Options) { o.StopDelay = time.Minute })
	s.step(stopReq{})
	s.step(stopReq{fast: true})
	if !s.env.signalled(101, syscall.SIGKILL) || s.m.delay.active {
		t.Fatalf("QUIT during the stop delay: signals %v, delay active %v", s.env.signals, s.m.delay.active)
	}
}

func TestStopsTheMasterDecidesHaveNoDelay(t *testing.T) {
	s := up(t, func(o *Options) { o.StopDelay = time.Minute; o.RestartLimit = 1 })
	s.exit(101, 1)
	s.advance(time.Second)
	s.exit(102, 1) // the crash loop gives up
	if !s.m.stopping || s.m.delay.active {
		t.Fatalf("crash-loop stop: %s, delay %v", s.describe(), s.m.delay.active)
	}
}

func TestHooks(t *testing.T) {
	hooks := func(o *Options) { o.OnReady = []string{"register"}; o.OnStopping = []string{"deregister"} }
	s := up(t, hooks)
	if got := s.hooksRun(); got != "on-ready:1:101" {
		t.Fatalf("hooks after the first generation serves: %q", got)
	}
	// A reload while on-ready still runs: the next waits, and two
	// waiting coalesce into the latest.
	s.reload()
	s.ready(102)
	s.exit(101, 0)
	s.reload()
	s.ready(103)
	s.exit(102, 0)
	if got := s.hooksRun(); got != "on-ready:1:101" {
		t.Fatalf("a second hook started while one ran: %q", got)
	}
	s.hookEnds(nil)
	if got := s.hooksRun(); got != "on-ready:1:101 on-ready:3:103" {
		t.Fatalf("after the first hook ended: %q, want generation 3 registered next", got)
	}
	// A stop while on-ready runs: on-stopping waits for it, and the
	// master, with nothing live, still waits for both.
	s.step(stopReq{})
	s.exit(103, 0)
	if !strings.Contains(s.log.String(), "hook waits for the one running") {
		t.Fatalf("no line says on-stopping waits:\n%s", s.log)
	}
	s.hookEnds(nil)
	if got := s.hooksRun(); got != "on-ready:1:101 on-ready:3:103 on-stopping:3:103" {
		t.Fatalf("hooks: %q", got)
	}
	if s.m.hooks.running == nil {
		t.Fatal("the master would return while on-stopping runs")
	}
	s.hookEnds(errors.New("exited with status 3"))
	if s.m.hooks.running != nil || !strings.Contains(s.log.String(), "hook failed") {
		t.Fatalf("after on-stopping failed: running %v\n%s", s.m.hooks.running, s.log)
	}
}

func TestStopDropsAWaitingOnReady(t *testing.T) {
	s := up(t, func(o *Options) { o.OnReady = []string{"register"} })
	s.reload()
	s.ready(102) // on-ready for 2 waits for the one for 1
	s.step(stopReq{})
	s.hookEnds(nil)
	if got := s.hooksRun(); got != "on-ready:1:101" || s.m.hooks.running != nil {
		t.Fatalf("hooks: %q, running %v", got, s.m.hooks.running)
	}
}
