package upgrader

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/host"
	"github.com/baton-sh/baton/notify"
)

// system is the env of a running Master: internal/host for the operating
// system, real timers, and the Host's reports turned into loop events.
type system struct {
	m *Master
	h *host.Host
}

// startSystem starts the env of m: a new Host, or, for the new image of
// an in-place upgrade, the one its old image handed over.
func startSystem(m *Master, handed *host.State) (*system, error) {
	o := &m.opts
	s := &system{m: m}
	cfg := host.Config{
		Command: o.Command, Dir: o.Dir, Env: o.Env, Sockets: o.Sockets, Protocol: o.Protocol,
		Identity: o.User, Environment: o.Environment, Umask: o.Umask,
		WatchAccepting: o.Ready == ReadyAccepting,
		DrainSignal:    o.DrainSignal, DrainTimeout: o.DrainTimeout, DrainGroup: o.DrainGroup,
		Subreaper: o.Subreaper, ShimPath: o.ShimPath, Stdout: o.Stdout, Stderr: o.Stderr, Output: o.WorkerOutput,
		HookTimeout: o.HookTimeout, Log: o.Log, LogFormat: o.LogFormat, LogLevel: o.LogLevel,
		ServiceNotify: o.ServiceNotify,
		Watchdog:      o.Watchdog,
	}
	var h *host.Host
	var err error
	if handed != nil {
		h, err = host.Resume(cfg, s, *handed)
		if h != nil && err != nil {
			m.log.Error().Str("event", "resume_partial").Err(err).Msg("the new image could not take back everything its old image handed over")
			err = nil
		}
	} else {
		h, err = host.New(cfg, s)
	}
	if err != nil {
		return nil, err
	}
	s.h = h
	return s, nil
}

func (s *system) close() { s.h.Close() }

// host.Events: each report becomes an event of the loop.

func (s *system) ChildExited(pid int, ws syscall.WaitStatus) { s.m.send(childExited{pid, ws}) }
func (s *system) Notified(pid int, d notify.Datagram)        { s.m.send(notified{pid, d}) }
func (s *system) Ready(pid int, how string)                  { s.m.send(readySeen{pid, how}) }
func (s *system) GroupEmpty(pid int)                         { s.m.send(groupEmpty{pid}) }
func (s *system) HookDone(r host.HookResult)                 { s.m.send(hookDone(r)) }

// env.

func (s *system) now() time.Time { return time.Now() }
func (s *system) monotonic() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// after arms a timer for e. Its cancel, called on the loop, is final: a
// timer that has already fired has its event on the way (the timer's
// goroutine waits to send it), and Stop cannot recall it; the event then
// arrives marked cancelled and is dropped, so no handler has to ask
// whether what it was armed for still stands.
func (s *system) after(d time.Duration, e event) func() {
	a := &armed{e: e}
	t := time.AfterFunc(d, func() { s.m.send(a) })
	return func() {
		a.cancelled = true
		t.Stop()
	}
}

// armed is a timer's event as it reaches the loop. cancelled is written
// and read only on the loop.
type armed struct {
	e         event
	cancelled bool
}

func (a *armed) apply(m *Master) {
	if !a.cancelled {
		a.e.apply(m)
	}
}

func (s *system) resolve() (host.Release, error)   { return s.h.Resolve() }
func (s *system) start(st host.Start) (int, error) { return s.h.StartWorker(st) }
func (s *system) signal(pid int, sig syscall.Signal, group bool) error {
	return s.h.Signal(pid, sig, group)
}
func (s *system) mainExited(pid int, keep bool) []string { return s.h.MainExited(pid, keep) }
func (s *system) forget(pid int)                         { s.h.Forget(pid) }
func (s *system) tookOver(pid int)                       { s.h.TookOver(pid) }
func (s *system) settled(pid int)                        { s.h.Settled(pid) }
func (s *system) accepting(pid int) (int, string)        { return s.h.Accepting(pid) }
func (s *system) adopted() []host.Stray                  { return s.h.Adopted() }
func (s *system) checkSockets() []host.LostSocket        { return s.h.CheckSockets() }
func (s *system) hook(hk host.Hook)                      { s.h.RunHook(hk) }
func (s *system) stopping(fast bool)                     { s.h.Stopping(fast) }
func (s *system) tellService(st host.ServiceState)       { s.h.TellService(st) }
func (s *system) memory(pid int) (int64, error)          { return s.h.Memory(pid) }
func (s *system) checkUpgrade(path string, args, env []string, state []byte, timeout time.Duration) {
	img, err := host.OpenImage(path)
	if err != nil {
		go s.m.send(upgradeChecked{"", err, nil})
		return
	}
	s.h.CheckRun(img, args, env, state, timeout, func(out string, err error) {
		if err == nil {
			err = img.Changed() // what ran is not what would be executed
		}
		if !s.m.send(upgradeChecked{out, err, img}) {
			img.Close()
		}
	})
}
func (s *system) handOver(gens map[int]int) (host.State, []int, error) { return s.h.HandOver(gens) }
func (s *system) takeBack()                                            { s.h.TakeBack() }
func (s *system) exec(img *host.Image, args, env []string, keep []int, state []byte) error {
	return s.h.ExecImage(img, args, env, keep, state)
}
func (s *system) probe(url string) {
	s.h.Probe(url, func(ok bool, detail string) { s.m.send(probeDone{ok, detail}) })
}
