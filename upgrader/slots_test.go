package upgrader

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/host"
	"github.com/baton-sh/baton/notify"
)

func workers(n, surge int) func(*Options) {
	return func(o *Options) { o.Workers, o.MaxSurge = n, surge }
}

// counts is how many workers are starting (incoming) and serving, and
// the most of each seen since the last call, sampled after every step.
func (s *sim) counts() (starting, serving int) {
	for _, sl := range s.m.slots {
		if sl.incoming != nil {
			starting++
		}
		if sl.serving != nil {
			serving++
		}
	}
	return starting, serving
}

// With the default surge the whole new generation starts at once, and
// the old one drains only when every new worker is ready.
func TestDefaultSurgeReplacesTheGenerationAtOnce(t *testing.T) {
	s := up(t, workers(4, 0))
	r := s.reload()
	s.want("serving=1 [0:1:101:serving 1:1:102:serving 2:1:103:serving 3:1:104:serving 0:2:105:starting 1:2:106:starting 2:2:107:starting 3:2:108:starting] rollout")
	s.ready(105, 106, 107)
	for _, pid := range []int{101, 102, 103, 104} {
		if s.env.signalled(pid, syscall.SIGTERM) {
			t.Fatalf("worker %d drained before every new worker was ready", pid)
		}
	}
	s.ready(108)
	s.want("serving=2 [0:1:101:draining 1:1:102:draining 2:1:103:draining 3:1:104:draining 0:2:105:serving 1:2:106:serving 2:2:107:serving 3:2:108:serving] rollout")
	for _, pid := range []int{101, 102, 103, 104} {
		s.exit(pid, 0)
	}
	if res := result(t, r); res.Err != nil || res.Generation != 2 {
		t.Fatalf("reload: %+v", res)
	}
	for i, st := range s.env.starts[4:] {
		if st.Generation != 2 || st.Index != i || st.Workers != 4 {
			t.Fatalf("start %d: %+v", i, st)
		}
	}
}

// --max-surge 1: one new worker at a time, each old one drained when its
// replacement is ready; never more than one starting, never fewer than
// four serving.
func TestSurgeOneRollsOneWorkerAtATime(t *testing.T) {
	s := up(t, workers(4, 1))
	r := s.reload()
	pid := 104
	for slot := 0; slot < 4; slot++ {
		pid++
		if starting, serving := s.counts(); starting != 1 || serving != 4 {
			t.Fatalf("slot %d: %d starting, %d serving; %s", slot, starting, serving, s.describe())
		}
		if in := s.m.slots[slot].incoming; in == nil || in.pid != pid {
			t.Fatalf("slot %d's replacement is not %d: %s", slot, pid, s.describe())
		}
		s.ready(pid)
		if !s.env.signalled(101+slot, syscall.SIGTERM) {
			t.Fatalf("slot %d's old worker not drained once its replacement was ready", slot)
		}
	}
	s.want("serving=2 [0:1:101:draining 1:1:102:draining 2:1:103:draining 3:1:104:draining 0:2:105:serving 1:2:106:serving 2:2:107:serving 3:2:108:serving] rollout")
	for _, p := range []int{101, 102, 103, 104} {
		s.exit(p, 0)
	}
	if res := result(t, r); res.Err != nil {
		t.Fatal(res.Err)
	}
}

// A release that breaks only on slot 2, after slots 0 and 1 were replaced,
// is rolled back: four workers of the old generation serve afterwards, and
// capacity never drops below four.
func TestRollbackAfterAPartialRollout(t *testing.T) {
	s := up(t, workers(4, 1))
	s.env.release = "/srv/releases/2/server"
	r := s.reload()
	s.ready(105)   // slot 0
	s.ready(106)   // slot 1
	s.exit(107, 1) // slot 2 fails
	if _, serving := s.counts(); serving != 4 {
		t.Fatalf("%d serving after the failure", serving)
	}
	s.want("serving=1 [0:1:101:draining 0:1:108:starting 1:1:102:draining 2:1:103:serving 3:1:104:serving 0:2:105:serving 1:2:106:serving] rollout(back)")
	s.ready(108)
	s.want("serving=1 [0:1:101:draining 0:1:108:serving 1:1:102:draining 1:1:109:starting 2:1:103:serving 3:1:104:serving 0:2:105:draining 1:2:106:serving] rollout(back)")
	s.ready(109)
	for _, st := range s.env.starts[len(s.env.starts)-2:] {
		if st.Generation != 1 || st.Release.Path != "/srv/releases/1/server" {
			t.Fatalf("rollback start %+v, want generation 1's release", st)
		}
	}
	for _, p := range []int{101, 102, 105, 106} {
		s.exit(p, 0)
	}
	res := result(t, r)
	if !res.RolledBack || !strings.Contains(res.Err.Error(), "worker 2") || res.Generation != 1 {
		t.Fatalf("reload result %+v", res)
	}
	s.want("serving=1 [0:1:108:serving 1:1:109:serving 2:1:103:serving 3:1:104:serving]")
}

// If the old release cannot start again (it was deleted), the rollback
// says so and keeps what serves.
func TestRollbackThatFailsKeepsWhatServes(t *testing.T) {
	s := up(t, workers(2, 1))
	r := s.reload()
	s.ready(103)   // slot 0 moved
	s.exit(104, 1) // slot 1 fails
	s.env.failStart = func(st host.Start) error {
		if st.Generation == 1 {
			return errors.New("no such file or directory")
		}
		return nil
	}
	s.want("serving=1 [0:1:101:draining 0:1:105:starting 1:1:102:serving 0:2:103:serving] rollout(back)")
	s.exit(105, 1) // the old release no longer starts
	res := result(t, r)
	if res.Err == nil || !strings.Contains(res.Err.Error(), "keeping what serves") {
		t.Fatalf("reload result %+v", res)
	}
	s.want("serving=1 [0:1:101:draining 1:1:102:serving 0:2:103:serving]")
}

// One crashing worker restarts its slot only, with its own backoff.
func TestCrashRestartsThatSlotOnly(t *testing.T) {
	s := up(t, workers(3, 0))
	s.exit(102, 1)
	s.want("serving=1 [0:1:101:serving 2:1:103:serving] restart:1")
	s.advance(DefaultRestartBackoff)
	s.want("serving=1 [0:1:101:serving 1:1:104:starting 2:1:103:serving]")
	s.ready(104)
	st := s.status()
	if st.Generation != 1 || st.Restarts != 1 || st.Workers[1].Restarts != 1 || st.Workers[0].Restarts != 0 {
		t.Fatalf("status: %+v", st)
	}
	// The slots' backoffs are their own.
	s.exit(104, 1)
	s.exit(101, 1)
	if d0, d1 := s.m.slots[0].crashes, s.m.slots[1].crashes; d0 != 1 || d1 != 2 {
		t.Fatalf("crash counts %d, %d; want 1 and 2", d0, d1)
	}
}

// A serving worker of the old generation that dies mid-rollout hands its
// slot to the new generation at once.
func TestOldWorkerCrashMidRollout(t *testing.T) {
	s := up(t, workers(3, 1))
	r := s.reload()
	s.exit(103, 1) // slot 2, not begun yet
	s.want("serving=1 [0:1:101:serving 1:1:102:serving 0:2:104:starting 2:2:105:starting] rollout")
	s.ready(105)
	s.ready(104)
	s.ready(106)
	s.exit(101, 0)
	s.exit(102, 0)
	if res := result(t, r); res.Err != nil {
		t.Fatal(res.Err)
	}
	s.want("serving=2 [0:2:104:serving 1:2:106:serving 2:2:105:serving]")
}

func TestScale(t *testing.T) {
	s := up(t, workers(2, 0))
	c := s.scale(4)
	s.want("serving=1 [0:1:101:serving 1:1:102:serving 2:1:103:starting 3:1:104:starting]")
	s.ready(103)
	if !pending(c) {
		t.Fatal("scale answered before every worker served")
	}
	s.ready(104)
	if res := result(t, c); res.Err != nil {
		t.Fatal(res.Err)
	}
	c = s.scale(1)
	s.want("serving=1 [0:1:101:serving 1:1:102:draining 2:1:103:draining 3:1:104:draining]")
	if res := result(t, c); res.Err != nil {
		t.Fatal(res.Err)
	}
	s.step(scaleReq{delta: -1})
	if len(s.m.slots) != 1 {
		t.Fatal("scaled below one worker")
	}
	s.step(scaleReq{delta: 1})
	s.want("serving=1 [0:1:101:serving 1:1:102:draining 1:1:105:starting 2:1:103:draining 3:1:104:draining]")
	for _, p := range []int{102, 103, 104} {
		s.exit(p, 0)
	}
	if st := s.status(); st.WorkerCount != 2 {
		t.Fatalf("worker count %d", st.WorkerCount)
	}
}

// A scale asked for during a reload applies once it has ended, with the
// new generation.
func TestScaleDuringARollout(t *testing.T) {
	s := up(t, workers(2, 0))
	r := s.reload()
	c := s.scale(3)
	s.want("serving=1 [0:1:101:serving 1:1:102:serving 0:2:103:starting 1:2:104:starting] rollout")
	s.ready(103, 104)
	s.exit(101, 0)
	s.exit(102, 0)
	if res := result(t, r); res.Err != nil {
		t.Fatal(res.Err)
	}
	s.want("serving=2 [0:2:103:serving 1:2:104:serving 2:2:105:starting]")
	s.ready(105)
	if res := result(t, c); res.Err != nil || res.Generation != 2 {
		t.Fatalf("scale: %+v", res)
	}
}

func TestStopDuringARollout(t *testing.T) {
	s := up(t, workers(3, 1))
	r := s.reload()
	s.ready(104)
	s.step(stopReq{})
	if res := result(t, r); !errors.Is(res.Err, ErrStopping) {
		t.Fatalf("reload: %+v", res)
	}
	s.want("serving=1 [0:1:101:draining 1:1:102:draining 2:1:103:draining 0:2:104:draining 1:2:105:draining] stopping")
}

// A HUP during a rollout is coalesced behind it: it finishes, then one
// more rollout runs.
func TestHUPDuringARollout(t *testing.T) {
	s := up(t, workers(2, 1))
	first := s.reload()
	s.ready(103)
	second := s.reload()
	s.ready(104)
	s.exit(101, 0)
	s.exit(102, 0)
	if res := result(t, first); res.Err != nil || res.Generation != 2 {
		t.Fatalf("first: %+v", res)
	}
	s.want("serving=2 [0:2:103:serving 1:2:104:serving 0:3:105:starting] rollout")
	s.ready(105, 106)
	s.exit(103, 0)
	s.exit(104, 0)
	if res := result(t, second); res.Err != nil || res.Generation != 3 {
		t.Fatalf("second: %+v", res)
	}
}

func TestSignalsGoToEveryServingWorker(t *testing.T) {
	s := up(t, workers(3, 0))
	s.reload()
	s.step(signalReq{syscall.SIGUSR2})
	for _, pid := range []int{101, 102, 103} {
		if !s.env.signalled(pid, syscall.SIGUSR2) {
			t.Errorf("worker %d did not get USR2", pid)
		}
	}
	if s.env.signalled(104, syscall.SIGUSR2) {
		t.Error("a starting worker got USR2")
	}
	// Only a drain signal is followed by SIGCONT: a worker stopped on
	// purpose stays stopped for a forwarded one.
	for _, x := range s.env.signals {
		if x.sig == syscall.SIGCONT {
			t.Errorf("forwarding USR2 sent %+v", x)
		}
	}
}

func TestOnReadyRunsOncePerGeneration(t *testing.T) {
	s := up(t, func(o *Options) { workers(3, 1)(o); o.OnReady = []string{"register"} })
	s.hookEnds(nil)
	s.reload()
	s.ready(104, 105, 106)
	if got := s.hooksRun(); got != "on-ready:1 on-ready:2" || fmt.Sprint(s.env.hooks[1].PIDs) != "[104 105 106]" {
		t.Fatalf("hooks %q, pids %v", got, s.env.hooks[1].PIDs)
	}
}

// Strays: a daemonized worker's process is drained once its worker has
// exited and killed after the drain timeout; a hook's at once.
func TestStrays(t *testing.T) {
	s := up(t, func(o *Options) { o.DrainTimeout = 10 * time.Second })
	s.env.adopt = []host.Stray{{PID: 500, PGID: 500, Comm: "daemon", Generation: 1}, {PID: 600, PGID: 600, Comm: "left", Hook: true}}
	s.exit(999, 0) // an intermediate process, reaped
	if !s.env.signalled(600, syscall.SIGKILL) || s.env.signalled(500, syscall.SIGTERM) {
		t.Fatalf("hook's stray not killed, or the live worker's drained: %v", s.env.signals)
	}
	s.exit(600, 9)
	r := s.reload()
	s.ready(102)
	s.exit(101, 0)
	if !s.env.signalled(500, syscall.SIGTERM) {
		t.Fatal("the stray was not drained once its worker exited")
	}
	if res := result(t, r); res.Err != nil {
		t.Fatal(res.Err)
	}
	s.advance(10 * time.Second)
	if !s.env.signalled(500, syscall.SIGKILL) {
		t.Fatal("the stray was not killed at the drain timeout")
	}
	s.exit(500, 9)
	if len(s.m.strays) != 0 || !s.env.forgotten[500] {
		t.Fatal("the stray is still known")
	}
}

// A new worker that daemonizes fails its reload, saying so.
func TestDaemonizingWorkerFailsItsReload(t *testing.T) {
	s := up(t, nil)
	r := s.reload()
	s.env.adopt = []host.Stray{{PID: 500, PGID: 500, Comm: "server", Generation: 2}}
	s.exit(102, 0)
	if res := result(t, r); res.Err == nil || !strings.Contains(res.Err.Error(), "daemonized") {
		t.Fatalf("reload: %+v", res)
	}
	if !s.env.signalled(500, syscall.SIGTERM) {
		t.Fatal("the daemon was not drained")
	}
}

// TestEveryStateAndEvent puts the master in each reachable situation and
// applies each event to it, checking the invariants after every step.
func TestEveryStateAndEvent(t *testing.T) {
	situations := map[string]struct {
		opts  func(*Options)
		setup func(*sim)
	}{
		"first starting":         {nil, func(s *sim) {}},
		"serving":                {nil, func(s *sim) { s.ready(101) }},
		"reload starting":        {nil, func(s *sim) { s.ready(101); s.reload() }},
		"reload queued":          {nil, func(s *sim) { s.ready(101); s.reload(); s.reload() }},
		"old draining":           {nil, func(s *sim) { s.ready(101); s.reload(); s.ready(102) }},
		"probation":              {func(o *Options) { o.MinReady = time.Second }, func(s *sim) { s.ready(101); s.reload(); s.ready(102) }},
		"restart scheduled":      {nil, func(s *sim) { s.ready(101); s.exit(101, 1) }},
		"restart starting":       {nil, func(s *sim) { s.ready(101); s.exit(101, 1); s.advance(time.Second) }},
		"stopping":               {nil, func(s *sim) { s.ready(101); s.reload(); s.step(stopReq{}) }},
		"new died, rolling back": {nil, func(s *sim) { s.ready(101); s.reload(); s.ready(102); s.exit(102, 1) }},
		"stop delay": {func(o *Options) { o.StopDelay = time.Minute; o.MinReady = time.Second }, func(s *sim) {
			s.ready(101)
			s.reload()
			s.ready(102)
			s.step(stopReq{})
		}},
		"on-stopping runs": {func(o *Options) { o.OnReady, o.OnStopping = []string{"r"}, []string{"d"} }, func(s *sim) {
			s.ready(101)
			s.hookEnds(nil)
			s.step(stopReq{})
		}},
		"on-ready runs":       {func(o *Options) { o.OnReady = []string{"r"} }, func(s *sim) { s.ready(101); s.reload(); s.ready(102) }},
		"3 workers rolling":   {workers(3, 1), func(s *sim) { s.ready(101, 102, 103); s.reload(); s.ready(104) }},
		"3 workers held":      {workers(3, 0), func(s *sim) { s.ready(101, 102, 103); s.reload(); s.ready(104, 105) }},
		"3 workers rollback":  {workers(3, 1), func(s *sim) { s.ready(101, 102, 103); s.reload(); s.ready(104); s.exit(105, 1) }},
		"3 workers one crash": {workers(3, 0), func(s *sim) { s.ready(101, 102, 103); s.exit(102, 1) }},
		"scaling up":          {workers(2, 0), func(s *sim) { s.ready(101, 102); s.scale(4) }},
		"scaled down":         {workers(3, 0), func(s *sim) { s.ready(101, 102, 103); s.scale(1) }},
		"stray": {nil, func(s *sim) {
			s.ready(101)
			s.env.adopt = []host.Stray{{PID: 500, PGID: 500, Generation: 1}}
			s.exit(999, 0)
		}},
	}
	events := map[string]func(*sim){
		"HUP":       func(s *sim) { s.reload() },
		"TERM":      func(s *sim) { s.step(stopReq{}) },
		"QUIT":      func(s *sim) { s.step(stopReq{fast: true}) },
		"USR2":      func(s *sim) { s.step(signalReq{syscall.SIGUSR2}) },
		"TTIN":      func(s *sim) { s.step(scaleReq{delta: 1}) },
		"TTOU":      func(s *sim) { s.step(scaleReq{delta: -1}) },
		"scale 2":   func(s *sim) { s.scale(2) },
		"orphan":    func(s *sim) { s.exit(999, 0) },
		"probe ok":  func(s *sim) { s.step(probeDone{ok: true}) },
		"probe 500": func(s *sim) { s.step(probeDone{ok: false, detail: "500"}) },
		"memory":    func(s *sim) { s.env.rss[101] = 1 << 40; s.m.opts.MaxMemory = 1 << 30; s.step(memoryCheck{}) },
		"watchdog trigger": func(s *sim) {
			s.step(notified{101, notify.Datagram{PID: 101, Message: notify.Message{"WATCHDOG": "trigger"}}})
		},
		"lost sock": func(s *sim) { s.env.lost = []host.LostSocket{{Name: "x"}}; s.exit(999, 0) },
		"sock file gone": func(s *sim) {
			s.env.lost = []host.LostSocket{{Name: "x", Path: "/run/x.sock"}}
			s.step(socketTick{})
		},
		"time": func(s *sim) { s.advance(2 * time.Minute) },
		"hook ends": func(s *sim) {
			if s.m.hooks.running != nil {
				s.hookEnds(nil)
			}
		},
	}
	for pid := 101; pid <= 106; pid++ {
		events[fmt.Sprint("ready ", pid)] = func(s *sim) { s.ready(pid) }
		events[fmt.Sprint("exit ", pid)] = func(s *sim) { s.exit(pid, 1) }
		events[fmt.Sprint("group empty ", pid)] = func(s *sim) { s.step(groupEmpty{pid}) }
		events[fmt.Sprint("STOPPING ", pid)] = func(s *sim) {
			s.step(notified{pid, notify.Datagram{PID: pid, Message: notify.Message{"STOPPING": "1"}}})
		}
	}
	for sn, sit := range situations {
		for en, event := range events {
			t.Run(sn+"/"+en, func(t *testing.T) {
				s := newSim(t, sit.opts)
				sit.setup(s)
				event(s)
				// Whatever happened, the master can still be stopped and
				// ends with nothing live once every worker exits.
				s.step(stopReq{})
				s.step(stopReq{}) // a second one ends any stop delay
				for _, w := range s.m.sortedWorkers() {
					s.exit(w.pid, 0)
				}
				for _, st := range s.m.sortedStrays() {
					s.exit(st.pid, 0)
				}
				for s.m.hooks.running != nil {
					s.hookEnds(nil)
				}
				if !s.m.finished() || s.m.delay.active {
					t.Fatalf("after stop: %s", s.describe())
				}
			})
		}
	}
}

// A slot whose old worker died during a reload, and whose new worker then
// failed, is restarted like after a crash: the failed reload leaves no
// slot with nothing serving and nothing to start it.
func TestSlotEmptiedByAFailedReloadIsRestarted(t *testing.T) {
	s := up(t, workers(2, 0))
	r := s.reload()
	s.exit(101, 1) // slot 0's old worker dies; 103 will take over when ready
	s.exit(103, 1) // and the new release fails
	if res := result(t, r); res.Err == nil {
		t.Fatal("the reload did not fail")
	}
	s.want("serving=1 [1:1:102:serving 1:2:104:draining] restart:0")
	s.advance(DefaultRestartBackoff)
	s.want("serving=1 [0:1:105:starting 1:1:102:serving 1:2:104:draining]")
	if st := s.env.starts[len(s.env.starts)-1]; st.Generation != 1 || st.Index != 0 {
		t.Fatalf("restart %+v, want generation 1 in slot 0", st)
	}
}

// The same during a rollback: slot 2 lost its old worker, its new one
// failed, and the rollback, which moves back only slots 0 and 1, leaves
// it to a crash restart.
func TestSlotEmptiedDuringARollbackIsRestarted(t *testing.T) {
	s := up(t, workers(4, 2))
	r := s.reload()
	s.ready(105, 106) // slots 0 and 1 moved
	s.exit(103, 1)    // slot 2's old worker dies with 107 starting
	s.exit(107, 1)    // the new release fails
	s.want("serving=1 [0:1:101:draining 0:1:109:starting 1:1:102:draining 1:1:110:starting 3:1:104:serving 0:2:105:serving 1:2:106:serving 3:2:108:draining] rollout(back) restart:2")
	s.ready(109, 110)
	s.advance(DefaultRestartBackoff)
	s.ready(111)
	for _, p := range []int{101, 102, 105, 106, 108} {
		s.exit(p, 0)
	}
	if res := result(t, r); !res.RolledBack {
		t.Fatalf("reload %+v", res)
	}
	s.want("serving=1 [0:1:109:serving 1:1:110:serving 2:1:111:serving 3:1:104:serving]")
}
