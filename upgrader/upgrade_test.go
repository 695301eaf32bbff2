package upgrader

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

var errExeced = errors.New("exec'd (the fake env never really executes)")

func upgradable(o *Options) {
	o.Version = "baton 1"
	o.Upgrade = &UpgradeOptions{Path: "/usr/local/bin/baton", Args: []string{"baton"}}
}

// upgradeNow asks for an upgrade and runs its check with the answer to.
func (s *sim) upgradeNow(to string, checkErr error) <-chan UpgradeResult {
	s.t.Helper()
	c := make(chan UpgradeResult, 1)
	s.step(upgradeReq{c})
	if len(s.env.checks) == 0 {
		return c
	}
	s.step(upgradeChecked{to: CheckOK + to, err: checkErr})
	return c
}

// resumed is a sim of the new image, restored from what s handed over.
func (s *sim) resumed(tweak func(*Options)) *sim {
	s.t.Helper()
	ho, err := ReadHandOver(s.env.execState)
	if err != nil {
		s.t.Fatalf("the state handed over: %v\n%s", err, s.env.execState)
	}
	o := Options{Command: []string{"server"}, Env: []string{}, ShimPath: "/bin/true", Log: zerolog.New(s.log), ServiceNotify: "/run/fake.sock"}
	if tweak != nil {
		tweak(&o)
	}
	o.Version = "baton 2"
	if err := o.setDefaults(); err != nil {
		s.t.Fatal(err)
	}
	env := newFakeEnv()
	env.clock = s.env.clock.Add(50 * time.Millisecond)
	env.wallStep = s.env.wallStep
	env.nextPID = s.env.nextPID
	n := &sim{t: s.t, m: newMaster(o, env), env: env, log: s.log}
	n.m.restore(ho)
	n.check()
	return n
}

func TestUpgradeHandsEverythingOver(t *testing.T) {
	opts := func(o *Options) { upgradable(o); workers(3, 1)(o); o.DrainTimeout = 10 * time.Second }
	s := up(t, opts)
	r := s.reload()
	s.ready(104, 105, 106)
	s.exit(101, 0)
	s.exit(102, 0) // 103 still drains: 10 s left
	s.advance(4 * time.Second)
	s.env.execErr = errExeced
	c := s.upgradeNow("baton 2", nil)
	if len(s.env.execState) == 0 {
		t.Fatalf("no exec: %s", s.describe())
	}
	if r := <-c; r.Err != nil || r.From != "baton 1" || r.To != "baton 2" {
		t.Fatalf("answer before the exec: %+v", r)
	}
	if res := result(t, r); res.Err != nil {
		t.Fatalf("the reload whose old worker drains, answered at the upgrade: %+v", res)
	}
	n := s.resumed(opts)
	n.want("serving=2 [2:1:103:draining 0:2:104:serving 1:2:105:serving 2:2:106:serving]")
	// Let the gen 1 worker left draining: its 10s drain timeout passed 4s
	// before the upgrade.
	n.advance(6*time.Second - 50*time.Millisecond)
	if !n.env.signalled(103, syscall.SIGKILL) {
		t.Fatal("the worker handed over while draining was not killed on its old deadline")
	}
	st := n.status()
	if st.Version != "baton 2" || st.Upgraded == nil || st.Generation != 2 || st.Restarts != 0 || st.LastReload.Trigger != "signal" {
		t.Fatalf("status after the upgrade: %+v", st)
	}
	// A crash after the upgrade restarts the slot from its recorded
	// release, as before it.
	n.exit(104, 1)
	n.advance(DefaultRestartBackoff)
	if st := n.env.starts[len(n.env.starts)-1]; st.Generation != 2 || st.Index != 0 || st.Release.Path != "/srv/releases/1/server" {
		t.Fatalf("restart after the upgrade: %+v", st)
	}
	if !strings.Contains(s.log.String(), `"event":"upgraded"`) {
		t.Fatal("no upgraded event")
	}
}

func TestUpgradeWaitsForAReload(t *testing.T) {
	s := up(t, upgradable)
	s.reload()
	s.upgradeNow("baton 2", nil)
	if len(s.env.checks) != 0 {
		t.Fatal("checked the new binary while a reload was under way")
	}
	s.ready(102)
	s.exit(101, 0)
	if len(s.env.checks) != 1 {
		t.Fatal("the upgrade did not begin once the reload ended")
	}
}

// A stop overtakes an upgrade that waits for a reload: the caller is
// told, and the check run that may still come changes nothing.
func TestStopAnswersAWaitingUpgrade(t *testing.T) {
	s := up(t, upgradable)
	s.reload()
	c := s.upgradeNow("baton 2", nil)
	s.step(stopReq{})
	select {
	case r := <-c:
		if !errors.Is(r.Err, ErrStopping) {
			t.Fatalf("upgrade waiting when the stop came: %+v", r)
		}
	default:
		t.Fatal("the stop left the upgrade that waited unanswered")
	}
	s.step(upgradeChecked{to: CheckOK + "baton 2"})
	if s.env.execState != nil {
		t.Fatal("exec'd while stopping")
	}
}

func TestUpgradeRefusedByTheCheckChangesNothing(t *testing.T) {
	s := up(t, upgradable)
	c := s.upgradeNow("", errors.New("it exited with status 1: exec format error"))
	r := <-c
	if r.Err == nil || !strings.Contains(r.Err.Error(), "failed its check") || s.env.execState != nil {
		t.Fatalf("refusal: %+v, exec'd %v", r, s.env.execState != nil)
	}
	s.want("serving=1 [0:1:101:serving]")
}

// A HUP or TERM caught while the master hands over is handed to the new
// image; a reload asked on the control socket meanwhile is refused, to be
// asked again.
func TestSignalsDuringTheExecAreNotLost(t *testing.T) {
	s := up(t, upgradable)
	control := make(chan Result, 1)
	s.m.opts.Upgrade.Quiesce = func() func() {
		s.m.send(reloadReq{TriggerSignal, make(chan Result, 1)})
		s.m.send(reloadReq{TriggerControl, control})
		s.m.send(stopReq{})
		return nil
	}
	s.env.execErr = errExeced
	s.upgradeNow("baton 2", nil)
	var ho HandOver
	if err := json.Unmarshal(s.env.execState, &ho); err != nil || ho.Engine.Pending.Reload == nil || ho.Engine.Pending.Stop != 1 {
		t.Fatalf("pending reload and stop not handed over: %v %+v", err, ho.Engine.Pending)
	}
	n := s.resumed(nil)
	if !n.m.stopping {
		t.Fatalf("the new image did not stop: %s", n.describe())
	}
	if r := result(t, control); !errors.Is(r.Err, ErrUpgrading) {
		t.Fatalf("control reload during the exec: %+v", r)
	}
}

// A TERM caught after the state was written down, just before the exec,
// would be lost with the old image: the exec is called off instead, and
// this image stops.
func TestAStopCaughtJustBeforeTheExecIsNotLost(t *testing.T) {
	s := up(t, upgradable)
	s.m.opts.Upgrade.BeforeExec = func() { s.m.send(stopReq{}) }
	s.env.execErr = errExeced
	s.upgradeNow("baton 2", nil)
	if s.env.execState != nil {
		var ho HandOver
		if err := json.Unmarshal(s.env.execState, &ho); err != nil || ho.Engine.Pending.Stop == 0 {
			t.Fatalf("exec'd with a state that lost the stop asked for just before the exec: %v %+v", err, ho.Engine.Pending)
		}
	}
	if !s.m.stopping {
		t.Fatalf("the stop asked for just before the exec did not happen: %s", s.describe())
	}
}

// What happens while the master hands over (a drain deadline passes, a
// worker exits) is not lost when the exec fails: this image carries it
// out as if it had just come.
func TestEventsDuringAFailedExecAreApplied(t *testing.T) {
	s := up(t, func(o *Options) { upgradable(o); o.DrainTimeout = time.Second })
	s.reload()
	s.ready(102)
	s.want("serving=2 [0:1:101:draining 0:2:102:serving] rollout")
	s.m.opts.Upgrade.Quiesce = func() func() {
		s.m.send(workerTimer{s.m.workers[101], draining}) // its drain deadline
		return nil
	}
	s.env.execErr = errors.New("exec format error")
	s.upgradeNow("baton 2", nil)
	s.check()
	if !s.env.signalled(101, syscall.SIGKILL) {
		t.Fatalf("the drain deadline that passed during the failed exec was lost: %s", s.describe())
	}
	s.exit(101, 0)
	s.want("serving=2 [0:2:102:serving]")
}

// A worker this image reaped while it handed over is one the new image
// can never reap: its exit goes with the state, and the new image
// restarts the slot as after any crash.
func TestAnExitDuringTheHandOverReachesTheNewImage(t *testing.T) {
	s := up(t, upgradable)
	s.m.opts.Upgrade.Quiesce = func() func() {
		s.m.send(childExited{101, syscall.WaitStatus(1 << 8)})
		return nil
	}
	s.env.execErr = errExeced
	s.upgradeNow("baton 2", nil)
	n := s.resumed(nil)
	if n.m.workers[101] != nil {
		t.Fatalf("the new image still counts on the worker the old one reaped: %s", n.describe())
	}
	n.advance(DefaultRestartBackoff)
	n.want("serving=1 [0:1:102:starting]")
}

// A build takes over from every state version it knows and refuses the
// others, so a downgrade across a state change fails its check run.
func TestHandOverVersions(t *testing.T) {
	for _, tc := range []struct {
		version int
		ok      bool
	}{
		{0, false},
		{OldestStateVersion, true},
		{StateVersion, true},
		{StateVersion + 1, false},
		{99, false},
	} {
		_, err := ReadHandOver([]byte(fmt.Sprintf(`{"version": %d}`, tc.version)))
		if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), fmt.Sprintf("version %d", tc.version))) {
			t.Errorf("version %d: err %v, want ok=%v", tc.version, err, tc.ok)
		}
	}
}

// A check run that prints more than its line hands over the version in
// the first line only; one whose version is not a short line of text is
// refused.
func TestUpgradeCheckVersionIsItsFirstLine(t *testing.T) {
	s := up(t, upgradable)
	s.env.execErr = errExeced
	r := <-s.upgradeNow("baton 2\n"+strings.Repeat("\x00junk\n", 1000), nil)
	if r.Err != nil || r.To != "baton 2" {
		t.Fatalf("answer: to %.40q, err %v; want to %q", r.To, r.Err, "baton 2")
	}
	s = up(t, upgradable)
	if r := <-s.upgradeNow(strings.Repeat("x", 300), nil); r.Err == nil || !strings.Contains(r.Err.Error(), "not a short line") {
		t.Fatalf("a 300-byte version: %+v", r)
	}
}

// A serving worker's watchdog and --max-age go on across an upgrade from
// what they had left: upgrades more often than either must not keep a
// wedged or old worker from being replaced.
func TestUpgradeKeepsWatchdogAndAgeDeadlines(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts func(*Options)
	}{
		{"watchdog", func(o *Options) { upgradable(o); o.Watchdog = 10 * time.Second }},
		{"max-age", func(o *Options) { upgradable(o); o.MaxAge = 10 * time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := up(t, tc.opts)
			s.advance(8 * time.Second)
			s.env.execErr = errExeced
			if r := <-s.upgradeNow("baton 2", nil); r.Err != nil {
				t.Fatal(r.Err)
			}
			n := s.resumed(tc.opts)
			n.want("serving=1 [0:1:101:serving]")
			n.advance(3 * time.Second) // 11s after it began to serve
			n.want("serving=1 [0:1:101:serving 0:1:102:starting]")
		})
	}
}

// Time left across the exec is measured on the monotonic clock: a wall
// clock set an hour forward meanwhile fires no handed-over timer early.
func TestUpgradeTimeLeftIgnoresAWallClockStep(t *testing.T) {
	opts := func(o *Options) { upgradable(o); o.Watchdog = 10 * time.Second }
	s := up(t, opts)
	s.advance(8 * time.Second)
	s.env.execErr = errExeced
	if r := <-s.upgradeNow("baton 2", nil); r.Err != nil {
		t.Fatal(r.Err)
	}
	s.env.clock = s.env.clock.Add(time.Hour)
	s.env.wallStep = time.Hour
	n := s.resumed(opts)
	n.want("serving=1 [0:1:101:serving]")
	n.advance(time.Second)
	n.want("serving=1 [0:1:101:serving]")
	n.advance(2 * time.Second) // 11s after its last ping
	n.want("serving=1 [0:1:101:serving 0:1:102:starting]")
}

// The probe's and the --max-memory check's timers go on across an
// upgrade from what they had left, as do the probe's count of failures
// and its backoff: upgrades more often than --probe-interval must not
// keep the probe from ever running, nor restart its backoff.
func TestUpgradeKeepsProbeAndMemoryTimers(t *testing.T) {
	t.Run("probe", func(t *testing.T) {
		opts := func(o *Options) { upgradable(o); o.Probe = "http://127.0.0.1:1/healthz" }
		s := up(t, opts)
		s.advance(DefaultProbeInterval * 8 / 10)
		s.env.execErr = errExeced
		if r := <-s.upgradeNow("baton 2", nil); r.Err != nil {
			t.Fatal(r.Err)
		}
		n := s.resumed(opts)
		n.advance(DefaultProbeInterval * 3 / 10)
		if n.env.probes != 1 {
			t.Fatalf("%d probes %s after the upgrade, %s after the last: the interval restarted", n.env.probes, DefaultProbeInterval*3/10, DefaultProbeInterval*11/10)
		}
	})
	t.Run("probe backoff", func(t *testing.T) {
		opts := func(o *Options) {
			upgradable(o)
			o.Probe = "http://127.0.0.1:1/healthz"
			o.ProbeFailures = 1
			o.RestartBackoff = time.Minute
			o.RestartBackoffMax = time.Hour
		}
		s := up(t, opts)
		s.advance(DefaultProbeInterval)
		s.step(probeDone{ok: false, detail: "500"}) // replaces 101 at once
		s.ready(102)
		s.exit(101, 0)
		s.want("serving=1 [0:1:102:serving]")
		s.advance(DefaultProbeInterval)
		s.step(probeDone{ok: false, detail: "500"}) // backs off: due in 2 min
		s.env.execErr = errExeced
		if r := <-s.upgradeNow("baton 2", nil); r.Err != nil {
			t.Fatal(r.Err)
		}
		n := s.resumed(opts)
		n.advance(DefaultProbeInterval)
		n.step(probeDone{ok: false, detail: "500"})
		n.want("serving=1 [0:1:102:serving]")
	})
	t.Run("max-memory", func(t *testing.T) {
		opts := func(o *Options) { upgradable(o); o.MaxMemory = 60 << 20 }
		s := up(t, opts)
		s.advance(memoryEvery * 8 / 10)
		s.env.execErr = errExeced
		if r := <-s.upgradeNow("baton 2", nil); r.Err != nil {
			t.Fatal(r.Err)
		}
		n := s.resumed(opts)
		n.env.rss[101] = 70 << 20
		n.advance(memoryEvery * 3 / 10)
		n.want("serving=1 [0:1:101:serving 0:1:102:starting]")
	})
}

// A replacement that failed is tried again after its backoff, across an
// upgrade too: a wedged worker whose watchdog has fired is not left
// serving for good.
func TestUpgradeKeepsAReplacementRetry(t *testing.T) {
	opts := func(o *Options) { upgradable(o); o.Watchdog = 10 * time.Second }
	s := up(t, opts)
	s.advance(10 * time.Second)
	s.exit(102, 1) // its replacement failed: tried again in 100ms
	s.want("serving=1 [0:1:101:serving]")
	s.env.execErr = errExeced
	if r := <-s.upgradeNow("baton 2", nil); r.Err != nil {
		t.Fatal(r.Err)
	}
	n := s.resumed(opts)
	n.advance(time.Second) // not a whole watchdog interval later
	n.want("serving=1 [0:1:101:serving 0:1:103:starting]")
}
