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

func TestReloadHandsOver(t *testing.T) {
	s := up(t, nil)
	r := s.reload()
	s.want("serving=1 [0:1:101:serving 0:2:102:starting] rollout")
	s.ready(102)
	s.want("serving=2 [0:1:101:draining 0:2:102:serving] rollout")
	if !s.env.signalled(101, syscall.SIGTERM) || !pending(r) {
		t.Fatal("old worker not told to drain, or the reload answered before it was gone")
	}
	s.exit(101, 0)
	if res := result(t, r); res.Err != nil || res.Generation != 2 || res.Outcome() != "ok" {
		t.Fatalf("reload: %+v", res)
	}
	if s.env.tookOvers[102] != 1 {
		t.Fatalf("generation 2 told it took over %d times, want 1", s.env.tookOvers[102])
	}
	if st := s.status(); st.LastReload.Trigger != "signal" || st.LastReload.Result != "ok" || st.Restarts != 0 {
		t.Fatalf("status: %+v", st.LastReload)
	}
}

// A release that crashes after taking over, while the old worker still
// drains a long request: the reload fails and the slot moves back to the
// old generation, started afresh from its recorded release.
func TestNewGenerationDiesWhileOldDrainsRollsBack(t *testing.T) {
	s := up(t, nil)
	s.env.release = "/srv/releases/2/server"
	r := s.reload()
	s.ready(102)
	s.exit(102, 1)
	s.want("serving=1 [0:1:101:draining 0:1:103:starting] rollout(back)")
	if st := s.env.starts[len(s.env.starts)-1]; st.Generation != 1 || st.Release.Path != "/srv/releases/1/server" {
		t.Fatalf("rollback started %+v, want generation 1 from its own release", st)
	}
	s.ready(103)
	s.want("serving=1 [0:1:101:draining 0:1:103:serving] rollout(back)")
	s.exit(101, 0) // the old one finishes its long request
	res := result(t, r)
	if !res.RolledBack || res.Err == nil || !strings.Contains(res.Err.Error(), "after it was ready, during the reload") {
		t.Fatalf("reload result %+v, want rolled back, naming the new generation's death", res)
	}
	s.want("serving=1 [0:1:103:serving]")
	if st := s.status(); st.Generation != 1 || st.LastReload.Result != "rolled_back" {
		t.Fatalf("status after the rollback: %+v", st.LastReload)
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
				s.step(notified{102, notify.Datagram{PID: 102, Message: notify.Message{"STOPPING": "1"}}})
			}, "said STOPPING=1 within --min-ready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := up(t, tc.opts)
			if tc.name == "cannot start" {
				s.env.failStart = func(host.Start) error { return errors.New("no such file") }
			}
			r := s.reload()
			tc.fail(s)
			res := result(t, r)
			if res.Err == nil || !strings.Contains(res.Err.Error(), tc.wantErr) || !strings.Contains(res.Err.Error(), "generation 1 is still serving") {
				t.Fatalf("reload result %v, want an error with %q that says generation 1 serves", res.Err, tc.wantErr)
			}
			if s.m.slots[0].serving == nil || s.m.slots[0].serving.pid != 101 {
				t.Fatalf("generation 1 no longer serves: %s", s.describe())
			}
			if s.env.signalled(101, syscall.SIGTERM) {
				t.Fatal("the old worker was told to drain although the reload failed")
			}
			if st := s.status(); st.LastReload.OK || st.LastReload.Result != "failed" || st.Restarts != 0 {
				t.Fatalf("status: %+v restarts %d", st.LastReload, st.Restarts)
			}
		})
	}
}

func TestMinReadyPromotesAfterTheWindow(t *testing.T) {
	s := up(t, func(o *Options) { o.MinReady = 5 * time.Second })
	r := s.reload()
	s.ready(102)
	s.want("serving=1 [0:1:101:serving 0:2:102:probation] rollout")
	s.advance(4 * time.Second)
	if s.env.signalled(101, syscall.SIGTERM) {
		t.Fatal("old worker drained before --min-ready passed")
	}
	s.advance(time.Second)
	s.want("serving=2 [0:1:101:draining 0:2:102:serving] rollout")
	s.exit(101, 0)
	if res := result(t, r); res.Err != nil {
		t.Fatal(res.Err)
	}
}

// When the worker a probation worker would replace dies, the new one
// takes over at once: nothing is left to protect.
func TestOldDiesDuringProbation(t *testing.T) {
	s := up(t, func(o *Options) { o.MinReady = 5 * time.Second })
	r := s.reload()
	s.ready(102)
	s.exit(101, 1)
	s.want("serving=2 [0:2:102:serving]")
	if st := s.status(); !st.Ready || st.WorkerPID != 102 {
		t.Fatalf("status: ready %v, pid %d", st.Ready, st.WorkerPID)
	}
	if res := result(t, r); res.Err != nil {
		t.Fatal(res.Err)
	}
}

func TestReloadsDuringAReloadCoalesce(t *testing.T) {
	s := up(t, nil)
	first := s.reload()
	second, third := s.reload(), s.reload()
	s.want("serving=1 [0:1:101:serving 0:2:102:starting] rollout queued")
	s.ready(102)
	s.exit(101, 0)
	if res := result(t, first); res.Err != nil || res.Generation != 2 {
		t.Fatalf("first: %+v", res)
	}
	s.want("serving=2 [0:2:102:serving 0:3:103:starting] rollout")
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
		t.Fatal("not every worker was drained")
	}
	s.exit(101, 0)
	s.exit(102, 0)
	if !s.m.finished() {
		t.Fatalf("not finished: %s", s.describe())
	}
	if late := s.reload(); !errors.Is(result(t, late).Err, ErrStopping) {
		t.Fatal("a reload during the stop started something")
	}
}

func TestDrainTimeoutKillsTheWorkerAndItsGroup(t *testing.T) {
	s := up(t, func(o *Options) { o.DrainTimeout = 2 * time.Second })
	s.reload()
	s.ready(102)
	s.advance(2 * time.Second)
	for _, x := range s.env.signals {
		if x.pid == 101 && x.sig == syscall.SIGKILL && x.group {
			return
		}
	}
	t.Fatalf("no SIGKILL to worker 101 and its group after the drain timeout: %v", s.env.signals)
}

// With --drain-group a shell wrapper exits on TERM before the server it
// started has finished: the worker ends with its process group, not with
// its main process, so nothing is killed mid-request.
func TestDrainEndsWithTheProcessGroup(t *testing.T) {
	s := up(t, func(o *Options) { o.DrainGroup = true; o.DrainTimeout = 5 * time.Second })
	r := s.reload()
	s.ready(102)
	if x := s.env.lastDrain(t); x.pid != 101 || !x.group {
		t.Fatalf("drain signal %+v, want to worker 101's group", x)
	}
	s.env.left[101] = []string{"555 (server)"}
	s.exit(101, 143) // the shell
	s.want("serving=2 [0:1:101:draining 0:2:102:serving] rollout")
	if !s.env.watched[101] {
		t.Fatal("the group left behind is not watched")
	}
	s.step(groupEmpty{101})
	if res := result(t, r); res.Err != nil {
		t.Fatal(res.Err)
	}
	for _, x := range s.env.signals {
		if x.sig == syscall.SIGKILL {
			t.Fatalf("SIGKILL sent: %+v", x)
		}
	}
	// Past the drain timeout the group is killed; the worker ends once it
	// is empty.
	r = s.reload()
	s.ready(103)
	s.env.left[102] = []string{"556 (server)"}
	s.exit(102, 143)
	s.advance(5 * time.Second)
	if !s.env.signalled(102, syscall.SIGKILL) {
		t.Fatal("no SIGKILL at the drain timeout")
	}
	s.step(groupEmpty{102})
	if res := result(t, r); res.Err != nil {
		t.Fatal(res.Err)
	}
}

// Without --drain-group only the main process hears the drain signal; a
// helper it started in its group hears it once the main process has
// exited, instead of holding the drain until SIGKILL. A serving worker's
// leftovers are killed at once.
func TestWhatAWorkerLeavesInItsGroup(t *testing.T) {
	s := up(t, nil)
	r := s.reload()
	s.ready(102)
	if x := s.env.lastDrain(t); x.pid != 101 || x.group {
		t.Fatalf("drain signal %+v, want worker 101's main process only", x)
	}
	s.env.left[101] = []string{"555 (helper)"}
	s.exit(101, 0)
	if x := s.env.lastDrain(t); x.pid != 101 || !x.group || x.sig != syscall.SIGTERM {
		t.Fatalf("after its main process exited, last signal %+v, want TERM to worker 101's group", x)
	}
	s.step(groupEmpty{101})
	if res := result(t, r); res.Err != nil {
		t.Fatal(res.Err)
	}
	s.env.left[102] = []string{"556 (helper)"}
	s.exit(102, 1) // crashed while serving
	if !s.env.killedLeft[102] || s.m.workers[102] != nil {
		t.Fatalf("a crashed worker's leftovers: killed %v, worker still live %v", s.env.killedLeft[102], s.m.workers[102] != nil)
	}
}

func TestCrashesBackOffThenGiveUp(t *testing.T) {
	s := up(t, func(o *Options) { o.RestartLimit = 3 })
	pid := 101
	for i, backoff := range []time.Duration{100, 200, 400} {
		s.exit(pid, 1)
		s.advance(backoff*time.Millisecond - time.Millisecond)
		if s.m.slots[0].incoming != nil {
			t.Fatalf("crash %d: restarted before its %dms backoff", i+1, backoff)
		}
		s.advance(time.Millisecond)
		pid++
		s.want(fmt.Sprintf("serving=1 [0:1:%d:starting]", pid))
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

func TestCrashRestartRunsTheSlotsOwnRelease(t *testing.T) {
	s := up(t, nil)
	s.env.release = "/srv/releases/2/server" // deployed, not reloaded
	s.exit(101, 1)
	s.advance(DefaultRestartBackoff)
	st := s.env.starts[len(s.env.starts)-1]
	if st.Generation != 1 || st.Release.Path != "/srv/releases/1/server" {
		t.Fatalf("crash restart started %+v, want generation 1's own release", st)
	}
	s.ready(102)
	if st := s.status(); st.LastReload.Trigger != "crash" || !st.LastReload.OK || st.Restarts != 1 {
		t.Fatalf("status after the restart: %+v, restarts %d", st.LastReload, st.Restarts)
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
		{NotifyAll, 555, true}, // a process of the worker: systemd-notify from a wrapper
		{NotifyMain, 101, true},
		{NotifyMain, 555, false},
	} {
		s := newSim(t, func(o *Options) { o.NotifyAccess = tc.access })
		s.step(notified{101, notify.Datagram{PID: tc.from, Message: notify.Message{"READY": "1"}}})
		if got := s.m.slots[0].serving != nil; got != tc.ready {
			t.Errorf("access %d, READY=1 from %d: ready %v, want %v; log:\n%s", tc.access, tc.from, got, tc.ready, s.log)
		}
	}
}

func TestNotifyLinesAreRateLimited(t *testing.T) {
	s := up(t, func(o *Options) { o.NotifyAccess = NotifyMain })
	for i := 0; i < 1000; i++ {
		s.step(notified{101, notify.Datagram{PID: 101, Message: notify.Message{"STATUS": fmt.Sprint("busy ", i)}}})
		s.step(notified{101, notify.Datagram{PID: 101, Message: notify.Message{"STOPPING": "1"}}})
		s.step(notified{101, notify.Datagram{PID: 101, Err: errors.New("bad line")}})
		s.step(notified{101, notify.Datagram{PID: 777, Message: notify.Message{"READY": "1"}}})
	}
	for _, key := range []string{"worker_status", "worker_stopping", "notify_malformed", "notify_ignored"} {
		if n := strings.Count(s.log.String(), `"event":"`+key+`"`); n > 1 {
			t.Errorf("%d %s lines for 1000 messages within a second, want at most 1", n, key)
		}
	}
	s.advance(time.Second)
	s.step(notified{101, notify.Datagram{PID: 101, Message: notify.Message{"STATUS": "idle"}}})
	if !strings.Contains(s.log.String(), `"suppressed":999`) {
		t.Fatalf("the next status line does not count the suppressed ones:\n%s", s.log)
	}
	if st := s.status(); st.Workers[0].Status != "idle" {
		t.Fatalf("status shows %q", st.Workers[0].Status)
	}
}

func TestLostSocketIsRestored(t *testing.T) {
	s := up(t, nil)
	r := s.reload()
	s.ready(102)
	s.env.lost = []host.LostSocket{{Name: "http"}}
	s.exit(101, 0) // the old worker shut the shared socket down as it drained
	if res := result(t, r); res.Err != nil {
		t.Fatal(res.Err)
	}
	s.want("serving=2 [0:2:102:serving 0:3:103:starting] rollout")
	if !strings.Contains(s.log.String(), `"event":"sockets_lost"`) || !strings.Contains(s.log.String(), `"gen":1`) {
		t.Fatalf("no error naming generation 1:\n%s", s.log)
	}
	s.ready(103)
	s.exit(102, 0)
	if st := s.status(); st.LastReload.Trigger != "restore" || !st.LastReload.OK {
		t.Fatalf("last reload %+v, want an ok restore", st.LastReload)
	}
}

// A unix socket's file deleted is found at the next look: the socket is
// bound anew (by the env) and a restore replaces the serving worker.
func TestSocketFileDeletedIsRestored(t *testing.T) {
	s := up(t, nil)
	s.env.lost = []host.LostSocket{{Name: "web", Path: "/run/app.sock"}}
	s.step(socketTick{})
	s.want("serving=1 [0:1:101:serving 0:2:102:starting] rollout")
	if log := s.log.String(); !strings.Contains(log, `"event":"sockets_lost"`) || !strings.Contains(log, `"paths":["/run/app.sock"]`) {
		t.Fatalf("no error naming the deleted file:\n%s", log)
	}
	s.ready(102)
	s.exit(101, 0)
	if st := s.status(); st.LastReload.Trigger != "restore" || !st.LastReload.OK {
		t.Fatalf("last reload %+v, want an ok restore", st.LastReload)
	}
}

// A reload asked for while a socket is lost restores it first, and ends
// after the restore: its success means a service that can be reached.
func TestReloadRestoresALostSocketFirst(t *testing.T) {
	s := up(t, nil)
	s.env.lost = []host.LostSocket{{Name: "web", Path: "/run/app.sock"}}
	r := s.reload()
	s.want("serving=1 [0:1:101:serving 0:2:102:starting] rollout queued")
	s.ready(102)
	s.exit(101, 0)
	if !pending(r) {
		t.Fatal("the reload was answered by the restore it waited behind")
	}
	s.ready(103)
	s.exit(102, 0)
	if res := result(t, r); res.Err != nil || res.Generation != 3 || res.Trigger != TriggerSignal {
		t.Fatalf("reload: %+v, want generation 3 after the restore", res)
	}
}

// A lost socket that cannot be bound anew is logged once for as long as
// binding it fails, not at every look; once bound, the restore follows.
func TestLostSocketRebindFailureLoggedOnce(t *testing.T) {
	s := up(t, nil)
	fail := host.LostSocket{Name: "web", Path: "/run/app/app.sock", Err: errors.New("no such file or directory")}
	for range 3 {
		s.env.lost = []host.LostSocket{fail}
		s.step(socketTick{})
	}
	if n := strings.Count(s.log.String(), `"event":"sockets_lost"`); n != 1 {
		t.Fatalf("%d sockets_lost lines for one failure, want 1:\n%s", n, s.log)
	}
	s.want("serving=1 [0:1:101:serving]")
	s.env.lost = []host.LostSocket{{Name: "web", Path: "/run/app/app.sock"}}
	s.step(socketTick{})
	s.want("serving=1 [0:1:101:serving 0:2:102:starting] rollout")
}

// A master with no socket file of its own does not wake to look for lost
// sockets; one whose socket could not be bound anew, found at a worker's
// exit, tries again every SocketCheckEvery until it can.
func TestSocketLooksOnlyWhenSomethingCanBeFound(t *testing.T) {
	armed := func(s *sim) (n int) {
		for _, tm := range s.env.timers {
			if _, ok := tm.e.(socketTick); ok && !tm.stopped {
				n++
			}
		}
		return n
	}
	s := up(t, nil)
	if n := armed(s); n != 0 {
		t.Fatalf("%d socket looks armed with TCP sockets only, want none", n)
	}
	r := s.reload()
	s.ready(102)
	s.env.lost = []host.LostSocket{{Name: "http", Err: errors.New("address already in use")}}
	s.exit(101, 0)
	result(t, r)
	if n := armed(s); n != 1 {
		t.Fatalf("%d socket looks armed after a failed rebind, want 1", n)
	}
	s.env.lost = []host.LostSocket{{Name: "http"}} // bound at last
	s.advance(SocketCheckEvery)
	s.want("serving=2 [0:2:102:serving 0:3:103:starting] rollout")
	if n := armed(s); n != 0 {
		t.Fatalf("%d socket looks armed once bound, want none", n)
	}
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
			if got := s.env.signalled(101, syscall.SIGTERM); got != tc.drained && s.m.workers[101] != nil {
				t.Fatalf("drain begun: %v, want %v; %s\nlog:\n%s", got, tc.drained, s.describe(), s.log)
			}
			s.step(stopReq{})
			s.exit(101, 0)
			if len(s.m.workers) != 0 || s.m.status().StopPhase != "drain" {
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
	// The starting worker serves nobody yet: it drains at once; the
	// serving one serves through the delay.
	s.want("serving=1 [0:1:101:serving 0:2:102:draining] stopping")
	s.ready(102) // too late: it drains
	s.advance(5 * time.Second)
	s.want("serving=1 [0:1:101:draining 0:2:102:draining] stopping")
}

func TestQuitKillsEverythingAndRunsNoHook(t *testing.T) {
	s := up(t, func(o *Options) {
		o.StopDelay = time.Minute
		o.OnReady, o.OnStopping = []string{"register"}, []string{"deregister"}
	})
	if s.m.hooks.running == nil {
		t.Fatal("on-ready does not run")
	}
	s.step(stopReq{fast: true})
	if !s.env.signalled(101, syscall.SIGKILL) || s.m.delay.active || !s.env.hooksKilled {
		t.Fatalf("QUIT: signals %v, delay active %v, hooks killed %v", s.env.signals, s.m.delay.active, s.env.hooksKilled)
	}
	s.hookEnds(errors.New("killed by signal KILL"))
	if got := s.hooksRun(); got != "on-ready:1" {
		t.Fatalf("hooks run: %q, want no on-stopping after QUIT", got)
	}
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

// hookEnds ends the running hook, as the env reports it.
func (s *sim) hookEnds(err error) {
	s.t.Helper()
	r := s.m.hooks.running
	if r == nil {
		s.t.Fatalf("no hook runs: %s", s.describe())
	}
	s.step(hookDone{Hook: *r, PID: 900, Err: err})
}

// hooksRun lists the hooks started so far as "kind:gen".
func (s *sim) hooksRun() string {
	var parts []string
	for _, h := range s.env.hooks {
		parts = append(parts, fmt.Sprintf("%s:%d", h.Kind, h.Generation))
	}
	return strings.Join(parts, " ")
}

func TestHooks(t *testing.T) {
	hooks := func(o *Options) { o.OnReady = []string{"register"}; o.OnStopping = []string{"deregister"} }
	s := up(t, hooks)
	if got := s.hooksRun(); got != "on-ready:1" || fmt.Sprint(s.env.hooks[0].PIDs) != "[101]" {
		t.Fatalf("hooks after the first generation serves: %q %v", got, s.env.hooks)
	}
	// A reload while on-ready still runs: the next waits, and two
	// waiting coalesce into the latest.
	s.reload()
	s.ready(102)
	s.exit(101, 0)
	s.reload()
	s.ready(103)
	s.exit(102, 0)
	if got := s.hooksRun(); got != "on-ready:1" {
		t.Fatalf("a second hook started while one ran: %q", got)
	}
	s.hookEnds(nil)
	if got := s.hooksRun(); got != "on-ready:1 on-ready:3" {
		t.Fatalf("after the first hook ended: %q, want generation 3 registered next", got)
	}
	// A stop while on-ready runs: on-stopping waits for it, and the
	// master, with nothing live, still waits for both.
	s.step(stopReq{})
	s.exit(103, 0)
	if !strings.Contains(s.log.String(), `"event":"hook_waits"`) {
		t.Fatalf("no line says on-stopping waits:\n%s", s.log)
	}
	s.hookEnds(nil)
	if got := s.hooksRun(); got != "on-ready:1 on-ready:3 on-stopping:3" {
		t.Fatalf("hooks: %q", got)
	}
	if s.m.finished() {
		t.Fatal("the master would return while on-stopping runs")
	}
	s.hookEnds(errors.New("exited with status 3"))
	if !s.m.finished() || !strings.Contains(s.log.String(), `"event":"hook_failed"`) {
		t.Fatalf("after on-stopping failed: finished %v\n%s", s.m.finished(), s.log)
	}
}

func TestStopDropsAWaitingOnReady(t *testing.T) {
	s := up(t, func(o *Options) { o.OnReady = []string{"register"} })
	s.reload()
	s.ready(102) // on-ready for 2 waits for the one for 1
	s.step(stopReq{})
	s.hookEnds(nil)
	if got := s.hooksRun(); got != "on-ready:1" || s.m.hooks.running != nil {
		t.Fatalf("hooks: %q, running %v", got, s.m.hooks.running)
	}
}

// The master's own watchdog keep-alive comes from the loop every half
// interval, through reloads and a stop's drain, and stops with the loop.
func TestServiceWatchdogKeepAlive(t *testing.T) {
	s := up(t, func(o *Options) { o.ServiceWatchdog = 2 * time.Second })
	s.m.keepServiceAlive() // as Run does once the loop is set up
	pings := func() int {
		n := 0
		for _, st := range s.env.service {
			if st.Watchdog {
				if st.Ready || st.Reloading || st.Stopping || st.Status != "" {
					t.Fatalf("a keep-alive says more than WATCHDOG=1: %+v", st)
				}
				n++
			}
		}
		return n
	}
	s.advance(3 * time.Second)
	if n := pings(); n != 4 { // at 0, 1, 2 and 3 s
		t.Fatalf("%d keep-alives over 3 s with a 2 s watchdog, want 4", n)
	}
	s.reload()
	s.ready(102)
	s.exit(101, 0)
	s.step(stopReq{})
	s.advance(2 * time.Second) // worker 102 still drains
	if n := pings(); n != 6 {
		t.Fatalf("%d keep-alives after 5 s, a reload and a stop's drain, want 6", n)
	}
}

// A watchdog interval far too short to keep (WATCHDOG_USEC=1) does not
// make the loop spin sending keep-alives: they go at most every
// serviceWatchdogFloor.
func TestServiceWatchdogFloor(t *testing.T) {
	s := up(t, func(o *Options) { o.ServiceWatchdog = time.Microsecond })
	s.m.keepServiceAlive()
	s.advance(100 * time.Millisecond)
	n := 0
	for _, st := range s.env.service {
		if st.Watchdog {
			n++
		}
	}
	if n != 11 { // at 0, 10, ..., 100 ms
		t.Fatalf("%d keep-alives over 100 ms with a 1 µs watchdog, want 11", n)
	}
}

func TestServiceManagerHearsEachStep(t *testing.T) {
	s := up(t, nil)
	s.reload()
	s.ready(102)
	s.exit(101, 0)
	s.step(stopReq{})
	var got []string
	for _, st := range s.env.service {
		switch {
		case st.Reloading:
			got = append(got, "RELOADING")
		case st.Ready:
			got = append(got, "READY")
		case st.Stopping:
			got = append(got, "STOPPING")
		}
	}
	if strings.Join(got, " ") != "READY RELOADING READY STOPPING" {
		t.Fatalf("service manager heard %v", got)
	}
}

// countEvent counts its applications.
type countEvent struct{ n *int }

func (c countEvent) apply(*Master) { *c.n++ }

// A timer cancelled after it fired, while its event waits to reach the
// loop (the loop was busy with another event), never reaches its handler;
// one not cancelled does.
func TestTimerCancelledInFlightIsDropped(t *testing.T) {
	m := newMaster(Options{}, nil)
	s := &system{m: m}
	for _, cancel := range []bool{true, false} {
		applied := 0
		stop := s.after(0, countEvent{&applied})
		e := <-m.events // fired, and sent
		if cancel {
			stop()
		}
		e.apply(m)
		if want := map[bool]int{true: 0, false: 1}[cancel]; applied != want {
			t.Errorf("cancelled %v: the event was applied %d times, want %d", cancel, applied, want)
		}
	}
}
