package upgrader

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/notify"
)

func (s *sim) notify(pid int, msg notify.Message) {
	s.t.Helper()
	s.step(notified{pid, notify.Datagram{PID: pid, Message: msg}})
}

// A worker that stops sending WATCHDOG=1 is replaced: a fresh worker
// starts, and the wedged one drains once the fresh one is ready.
func TestWatchdogReplacesAWedgedWorker(t *testing.T) {
	s := up(t, func(o *Options) { o.Watchdog = 2 * time.Second })
	for range 3 {
		s.advance(time.Second)
		s.notify(101, notify.Message{"WATCHDOG": "1"})
	}
	s.want("serving=1 [0:1:101:serving]")
	s.advance(2 * time.Second)
	s.want("serving=1 [0:1:101:serving 0:1:102:starting]")
	s.ready(102)
	s.want("serving=1 [0:1:101:draining 0:1:102:serving]")
	if st := s.status(); st.LastReload.Trigger != "watchdog" || !st.LastReload.OK {
		t.Fatalf("last reload %+v", st.LastReload)
	}
	// WATCHDOG=trigger asks at once; WATCHDOG_USEC=0 turns it off.
	s.notify(102, notify.Message{"WATCHDOG": "trigger"})
	s.want("serving=1 [0:1:101:draining 0:1:102:serving 0:1:103:starting]")
	s.ready(103)
	s.notify(103, notify.Message{"WATCHDOG_USEC": "0"})
	s.exit(101, 0)
	s.exit(102, 0)
	s.advance(time.Minute)
	s.want("serving=1 [0:1:103:serving]")
}

// freeze is the master not running for d (SIGSTOP, a frozen cgroup): the
// clock moves on, and the timers that fell due meanwhile fire late, all
// at once, when it runs again.
func (s *sim) freeze(d time.Duration) {
	s.t.Helper()
	s.env.clock = s.env.clock.Add(d)
	for {
		var due *fakeTimer
		for _, t := range s.env.timers {
			if !t.stopped && !t.at.After(s.env.clock) && (due == nil || t.at.Before(due.at)) {
				due = t
			}
		}
		if due == nil {
			return
		}
		due.stopped = true
		s.step(due.e)
	}
}

// A watchdog deadline that passed while baton itself was not running
// (`podman pause` froze the master with its workers) proves nothing about
// the worker: it gets a fresh interval, and only silence that baton was
// running to hear replaces it.
func TestWatchdogDeadlineMissedWhileFrozen(t *testing.T) {
	s := up(t, func(o *Options) { o.Watchdog = 2 * time.Second })
	s.advance(time.Second)
	s.notify(101, notify.Message{"WATCHDOG": "1"})
	s.freeze(5 * time.Second)
	s.want("serving=1 [0:1:101:serving]")
	if !strings.Contains(s.log.String(), `"event":"watchdog_deferred"`) {
		t.Fatal("no watchdog_deferred event")
	}
	s.advance(time.Second)
	s.notify(101, notify.Message{"WATCHDOG": "1"}) // it runs again too
	s.advance(time.Second)
	s.want("serving=1 [0:1:101:serving]")
	s.advance(time.Second + time.Millisecond) // silent while baton runs
	s.want("serving=1 [0:1:101:serving 0:1:102:starting]")
}

// A master starved of CPU (or paused again and again) sees every deadline
// late; a wedged worker must not escape replacement for as long as that
// lasts. A deadline seen late is deferred once; the next one, with no
// WATCHDOG=1 heard in between, replaces the worker however late it is
// seen. A ping in between earns the worker a deferral again.
func TestWatchdogDefersOnceBetweenPings(t *testing.T) {
	s := up(t, func(o *Options) { o.Watchdog = 2 * time.Second })
	s.freeze(4 * time.Second) // due at 2s, seen at 4s: deferred to 6s
	s.want("serving=1 [0:1:101:serving]")
	s.advance(time.Second)
	s.notify(101, notify.Message{"WATCHDOG": "1"}) // due at 7s
	s.freeze(4 * time.Second)                      // seen at 9s: deferred to 11s
	s.want("serving=1 [0:1:101:serving]")
	s.freeze(4 * time.Second) // seen at 13s, nothing heard since 5s
	s.want("serving=1 [0:1:101:serving 0:1:102:starting]")
	if n := strings.Count(s.log.String(), `"event":"watchdog_deferred"`); n != 2 {
		t.Fatalf("%d watchdog_deferred events, want 2", n)
	}
}

func TestExtendTimeoutUsec(t *testing.T) {
	s := newSim(t, func(o *Options) { o.ReadyTimeout = time.Second })
	s.notify(101, notify.Message{"EXTEND_TIMEOUT_USEC": "3000000"})
	s.advance(2 * time.Second)
	s.ready(101)
	s.want("serving=1 [0:1:101:serving]")
}

func TestMaxMemoryReplacesOneWorkerAtATime(t *testing.T) {
	s := up(t, func(o *Options) { workers(2, 0)(o); o.MaxMemory = 60 << 20 })
	s.env.rss[101], s.env.rss[102] = 70<<20, 80<<20
	s.advance(time.Second)
	s.want("serving=1 [0:1:101:serving 0:1:103:starting 1:1:102:serving]")
	if !strings.Contains(s.log.String(), `"event":"replacement_waits"`) {
		t.Fatal("the second replacement does not wait for the first")
	}
	s.ready(103)
	s.want("serving=1 [0:1:101:draining 0:1:103:serving 1:1:102:serving 1:1:104:starting]")
	s.ready(104)
	s.want("serving=1 [0:1:101:draining 0:1:103:serving 1:1:102:draining 1:1:104:serving]")
}

func TestMaxAgeRecyclesWorkers(t *testing.T) {
	s := up(t, func(o *Options) { workers(2, 0)(o); o.MaxAge = 10 * time.Second })
	s.advance(11 * time.Second)
	if n := len(s.env.starts); n < 3 {
		t.Fatalf("no worker recycled after --max-age: %s", s.describe())
	}
	if st := s.status(); st.LastReload.Trigger != "age" && s.m.healingSlot() == nil {
		t.Fatalf("status %+v", st.LastReload)
	}
}

// A replacement that fails keeps the old worker serving, and is tried
// again with backoff.
func TestFailedReplacementKeepsTheOldWorker(t *testing.T) {
	s := up(t, func(o *Options) { o.Watchdog = time.Second })
	s.advance(time.Second)
	s.exit(102, 1)
	s.want("serving=1 [0:1:101:serving]")
	if s.env.signalled(101, syscall.SIGTERM) {
		t.Fatal("the old worker was drained although its replacement failed")
	}
	s.advance(DefaultRestartBackoff)
	s.want("serving=1 [0:1:101:serving 0:1:103:starting]")
}

func probeUp(t *testing.T, tweak func(*Options)) *sim {
	s := up(t, func(o *Options) {
		o.Probe = "http://127.0.0.1:1/healthz"
		if tweak != nil {
			tweak(o)
		}
	})
	return s
}

// A release failing its probe on probation is rolled back; the old one
// serves on.
func TestProbeVetoesAReleaseOnProbation(t *testing.T) {
	s := probeUp(t, func(o *Options) { o.MinReady = 3 * time.Second })
	s.advance(DefaultProbeInterval)
	s.step(probeDone{ok: true})
	r := s.reload()
	s.ready(102)
	s.advance(probeDuringProbation)
	s.step(probeDone{ok: false, detail: "500 from http://127.0.0.1:1/healthz"})
	res := result(t, r)
	if res.Err == nil || !strings.Contains(res.Err.Error(), "probe failed: 500 from") {
		t.Fatalf("reload: %+v", res)
	}
	s.want("serving=1 [0:1:101:serving 0:2:102:draining]")
}

func TestProbeFailingBeforeTheReloadDoesNotVeto(t *testing.T) {
	s := probeUp(t, func(o *Options) { o.MinReady = 3 * time.Second })
	s.advance(DefaultProbeInterval)
	s.step(probeDone{ok: false, detail: "500"})
	r := s.reload()
	s.ready(102)
	s.advance(probeDuringProbation)
	s.step(probeDone{ok: false, detail: "500"})
	if !strings.Contains(s.log.String(), `"event":"probe_no_veto"`) {
		t.Fatal("no line says the probe does not veto")
	}
	s.advance(3 * time.Second)
	s.exit(101, 0)
	if res := result(t, r); res.Err != nil {
		t.Fatalf("reload: %v", res.Err)
	}
}

func TestProbeFailuresReplaceAServingWorker(t *testing.T) {
	s := probeUp(t, nil)
	for range DefaultProbeFailures {
		s.advance(DefaultProbeInterval)
		s.step(probeDone{ok: false, detail: "500"})
	}
	s.want("serving=1 [0:1:101:serving 0:1:102:starting]")
	if st := s.status(); st.LastReload.Trigger != "start" {
		t.Fatalf("%+v", st.LastReload)
	}
}

// More generations draining than --max-draining: the oldest is killed,
// and status, which lists it until it is reaped, says so: it no longer
// counts as draining.
func TestMaxDraining(t *testing.T) {
	s := up(t, func(o *Options) { o.MaxDraining = 2; o.DrainTimeout = time.Minute })
	for pid := 102; pid <= 104; pid++ {
		s.reload()
		s.ready(pid)
	}
	if !s.env.signalled(101, syscall.SIGKILL) || s.env.signalled(102, syscall.SIGKILL) {
		t.Fatalf("signals %v: want generation 1 killed, 2 not", s.env.signals)
	}
	if !strings.Contains(s.log.String(), `"event":"drain_cut"`) {
		t.Fatal("no drain_cut line")
	}
	draining := 0
	for _, w := range s.status().Workers {
		if w.Killed != (w.PID == 101) {
			t.Fatalf("status of worker %d: killed %v", w.PID, w.Killed)
		}
		if w.State == "draining" && !w.Killed {
			draining++
		}
	}
	if draining != 2 {
		t.Fatalf("status shows %d workers draining and not killed, want 2: %+v", draining, s.status().Workers)
	}
}

// Removing the slot whose worker is being replaced ends that replacement,
// and the next one waiting its turn starts: none waits for a replacement
// nothing will end.
func TestScaleDownDuringAReplacementStartsTheNextOne(t *testing.T) {
	s := up(t, func(o *Options) { workers(3, 0)(o); o.MaxMemory = 60 << 20 })
	s.env.rss[103] = 80 << 20
	s.advance(time.Second)
	s.want("serving=1 [0:1:101:serving 1:1:102:serving 2:1:103:serving 2:1:104:starting]")
	s.env.rss[101] = 80 << 20
	s.advance(time.Second)
	s.want("serving=1 [0:1:101:serving 1:1:102:serving 2:1:103:serving 2:1:104:starting]")
	s.scale(2)
	s.want("serving=1 [0:1:101:serving 0:1:105:starting 1:1:102:serving 2:1:103:draining 2:1:104:draining]")
	s.ready(105)
	s.want("serving=1 [0:1:101:draining 0:1:105:serving 1:1:102:serving 2:1:103:draining 2:1:104:draining]")
}

// A reload supersedes the replacements under way and waiting: no worker
// of the old generation starts only to be drained at once.
func TestReloadStartsNoReplacementThatWaited(t *testing.T) {
	s := up(t, func(o *Options) { workers(3, 0)(o); o.MaxMemory = 60 << 20 })
	s.env.rss[101], s.env.rss[102], s.env.rss[103] = 80<<20, 80<<20, 80<<20
	s.advance(time.Second)
	s.want("serving=1 [0:1:101:serving 0:1:104:starting 1:1:102:serving 2:1:103:serving]")
	r := s.reload()
	s.want("serving=1 [0:1:101:serving 0:1:104:draining 1:1:102:serving 2:1:103:serving 0:2:105:starting 1:2:106:starting 2:2:107:starting] rollout")
	s.ready(105, 106, 107)
	for _, p := range []int{101, 102, 103, 104} {
		s.exit(p, 0)
	}
	if res := result(t, r); res.Err != nil {
		t.Fatal(res.Err)
	}
	s.want("serving=2 [0:2:105:serving 1:2:106:serving 2:2:107:serving]")
}

// A worker wedged during a reload that then fails still serves, and is
// replaced once the reload has ended: its watchdog's verdict is not lost.
func TestWatchdogVerdictOutlivesAFailedReload(t *testing.T) {
	s := up(t, func(o *Options) { workers(2, 1)(o); o.Watchdog = 2 * time.Second })
	r := s.reload()
	s.want("serving=1 [0:1:101:serving 1:1:102:serving 0:2:103:starting] rollout")
	s.advance(time.Second)
	s.notify(101, notify.Message{"WATCHDOG": "1"})
	s.advance(time.Second) // 102 is silent
	s.exit(103, 1)
	if res := result(t, r); res.Err == nil {
		t.Fatal("the reload did not fail")
	}
	s.want("serving=1 [0:1:101:serving 1:1:102:serving 1:1:104:starting]")
	s.ready(104)
	s.want("serving=1 [0:1:101:serving 1:1:102:draining 1:1:104:serving]")
}

// A worker that dies while its replacement starts (the kernel's OOM
// killer takes a worker over --max-memory) leaves the slot to that
// replacement, with no crash restart beside it; should the replacement
// fail too, the slot restarts as after a crash rather than stay empty.
func TestWorkerDyingWhileItsReplacementStarts(t *testing.T) {
	s := up(t, func(o *Options) { workers(2, 0)(o); o.Watchdog = time.Second })
	s.notify(102, notify.Message{"WATCHDOG_USEC": "0"})
	s.advance(time.Second)
	s.want("serving=1 [0:1:101:serving 0:1:103:starting 1:1:102:serving]")
	s.exit(101, 137)
	s.want("serving=1 [0:1:103:starting 1:1:102:serving]")
	s.exit(103, 1)
	s.want("serving=1 [1:1:102:serving] restart:0")
	s.advance(DefaultRestartBackoff)
	s.want("serving=1 [0:1:104:starting 1:1:102:serving]")
	s.ready(104)
	s.want("serving=1 [0:1:104:serving 1:1:102:serving]")
}
