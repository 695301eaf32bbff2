package upgrader

import (
	"strings"
	"time"
)

// A lifecycle hook is a command the master runs at a lifecycle step, such
// as registering the service with a load balancer when a generation
// serves (Options.OnReady) and deregistering it when a stop begins
// (Options.OnStopping).
//
// A hook is started from the loop but runs beside it: the loop never
// waits for one, and learns of its end as an event. At most one hook runs
// at a time. A hook due while another runs waits for it, and waiting hooks
// coalesce: only the latest waits (a newer on-ready replaces an older one,
// and on-stopping replaces a waiting on-ready, which a stop makes moot).
// A hook runs in its own process group with stdin from /dev/null; its
// output is logged with its end; after HookTimeout, or as soon as its main
// process exits, whatever is left of its group is killed. A failing hook is
// logged and changes nothing else. A master that stops waits for a running
// hook before Run returns, which HookTimeout bounds.
//
// Its environment is the workers' base environment, without the socket
// activation variables, plus:
//
//	BATON_HOOK         on-ready or on-stopping
//	BATON_GENERATION   the serving generation (on-stopping: the one serving when the stop began; 0 if none)
//	BATON_WORKER_PID   its main process
//	BATON_MASTER_PID   the master's PID
//	BATON_ADDRS        the bound sockets, name=address,… in --listen order
type hookKind int

const (
	hookOnReady hookKind = iota
	hookOnStopping
)

func (k hookKind) String() string {
	if k == hookOnStopping {
		return "on-stopping"
	}
	return "on-ready"
}

// hookRun is one run of a hook.
type hookRun struct {
	kind     hookKind
	argv     []string
	gen, pid int // the generation it is about, 0 if none
}

// hookDone is a hook's end, as the env reports it to the loop.
type hookDone struct {
	run    hookRun
	pid    int    // the hook's own process, 0 if it never started
	exit   string // how it ended: "exited with status 0", …
	err    error  // nil when it exited with status 0
	output string
	took   time.Duration
}

// hookState is the loop's view of its hooks.
type hookState struct {
	running *hookRun
	waiting *hookRun
	served  bool // a generation has served, so there is something to deregister
}

// maxHookOutput is how much of a hook's output is logged.
const maxHookOutput = 4096

// runHook runs the hook of kind about generation g (nil: none), now or
// once the one running has ended.
func (m *Master) runHook(kind hookKind, g *generation) {
	argv := m.opts.OnReady
	if kind == hookOnStopping {
		argv = m.opts.OnStopping
	} else {
		m.hooks.served = true
	}
	if len(argv) == 0 {
		return
	}
	h := &hookRun{kind: kind, argv: argv}
	if g != nil {
		h.gen, h.pid = g.n, g.pid
	}
	if r := m.hooks.running; r != nil {
		ev := m.log.Info().Str("hook", kind.String()).Int("gen", h.gen).Str("running", r.kind.String())
		if w := m.hooks.waiting; w != nil {
			ev = ev.Str("replaces", w.kind.String()).Int("replaces_gen", w.gen)
		}
		ev.Msg("hook waits for the one running")
		m.hooks.waiting = h
		return
	}
	m.startHook(h)
}

func (m *Master) startHook(h *hookRun) {
	m.hooks.running = h
	m.log.Info().Str("hook", h.kind.String()).Int("gen", h.gen).Int("worker_pid", h.pid).
		Strs("argv", h.argv).Msg("hook started")
	m.env.hook(*h)
}

// hookEnded handles a hook's end and starts the one waiting.
func (m *Master) hookEnded(d hookDone) {
	m.hooks.running = nil
	ev := m.log.Info()
	msg := "hook done"
	if d.err != nil {
		ev, msg = m.log.Warn().Err(d.err), "hook failed (the service is not affected)"
	}
	ev = ev.Str("hook", d.run.kind.String()).Int("gen", d.run.gen).Str("took", d.took.Round(time.Millisecond).String())
	if d.pid != 0 {
		ev = ev.Int("hook_pid", d.pid).Str("how", d.exit)
	}
	if out := strings.TrimSpace(d.output); out != "" {
		ev = ev.Str("output", out)
	}
	ev.Msg(msg)
	if w := m.hooks.waiting; w != nil {
		m.hooks.waiting = nil
		if m.stopping && w.kind == hookOnReady {
			m.log.Info().Int("gen", w.gen).Msg("on-ready hook dropped: the master is stopping")
		} else {
			m.startHook(w)
		}
	}
	if d.run.kind == hookOnStopping {
		m.stopHookEnded()
	}
}

// stoppingHookBusy reports whether an on-stopping hook runs or waits.
func (m *Master) stoppingHookBusy() bool {
	return (m.hooks.running != nil && m.hooks.running.kind == hookOnStopping) ||
		(m.hooks.waiting != nil && m.hooks.waiting.kind == hookOnStopping)
}
