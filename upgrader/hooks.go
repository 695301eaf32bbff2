package upgrader

import (
	"strings"
	"time"

	"github.com/baton-sh/baton/internal/host"
)

// A lifecycle hook is a command the master runs at a lifecycle step, such
// as registering the service with a load balancer once a generation
// serves (Options.OnReady: when the last worker of a rolled-out generation
// has taken over, and when the service serves again after every worker
// had died) and deregistering it when a stop begins (Options.OnStopping).
//
// A hook is started from the loop but runs beside it: the loop never
// waits for one, and learns of its end as an event. At most one hook runs
// at a time. A hook due while another runs waits for it, and waiting hooks
// coalesce: only the latest waits (a newer on-ready replaces an older one,
// and on-stopping replaces a waiting on-ready, which a stop makes moot).
// A hook runs in its own process group with stdin from /dev/null; its
// output is logged with its end. A hook ends when its process exits; after
// HookTimeout, or as soon as it has exited, whatever is left of its group
// is killed, and anything it left elsewhere is a stray killed at once. A
// failing hook is logged and changes nothing else. A master that stops
// waits for a running hook before Run returns, which HookTimeout bounds;
// a fast stop (StopNow) kills it and runs no on-stopping.
//
// It runs as the workers do (Options.User, Options.Umask), through the
// exec shim. Its environment is that of the generation it is about (see
// Options.Environment), without the socket activation variables, plus:
//
//	BATON_HOOK          on-ready or on-stopping
//	BATON_GENERATION    the serving generation (on-stopping: the one serving when the stop began; 0 if none)
//	BATON_WORKER_PID    its first worker's main process
//	BATON_WORKER_PIDS   every serving worker's main process, comma-separated, by slot
//	BATON_MASTER_PID    the master's PID
//	BATON_ADDRS         the bound sockets, name=address,… in --listen order
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

// hookState is the loop's view of its hooks.
type hookState struct {
	running *host.Hook
	waiting *host.Hook
	served  bool // a generation has served, so there is something to deregister
}

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
	h := &host.Hook{Kind: kind.String(), Argv: argv}
	if g != nil {
		h.Generation, h.Env = g.n, g.release.Env
		for _, s := range m.slots {
			if s.serving != nil && s.serving.gen == g {
				h.PIDs = append(h.PIDs, s.serving.pid)
			}
		}
	}
	if r := m.hooks.running; r != nil {
		ev := m.log.Info().Str("event", "hook_waits").Str("hook", h.Kind).Int("gen", h.Generation).Str("running", r.Kind)
		if w := m.hooks.waiting; w != nil {
			ev = ev.Str("replaces", w.Kind).Int("replaces_gen", w.Generation)
		}
		ev.Msg("hook waits for the one running")
		m.hooks.waiting = h
		return
	}
	m.startHook(h)
}

func (m *Master) startHook(h *host.Hook) {
	m.hooks.running = h
	m.log.Info().Str("event", "hook_started").Str("hook", h.Kind).Int("gen", h.Generation).Ints("worker_pids", h.PIDs).
		Strs("argv", h.Argv).Msg("hook started")
	m.env.hook(*h)
}

// hookEnded handles a hook's end and starts the one waiting.
func (m *Master) hookEnded(d host.HookResult) {
	m.hooks.running = nil
	// What the hook left outside its process group was handed to the
	// master as it exited: the reaper hands a hook's exit to its runner,
	// not to the loop, so no reap looks for them otherwise.
	m.adopt()
	ev := m.log.Info().Str("event", "hook_done")
	msg := "hook done"
	if d.Err != nil {
		ev, msg = m.log.Warn().Str("event", "hook_failed").Err(d.Err), "hook failed (the service is not affected)"
	}
	ev = ev.Str("hook", d.Hook.Kind).Int("gen", d.Hook.Generation).Str("took", d.Took.Round(time.Millisecond).String())
	if d.PID != 0 {
		ev = ev.Int("hook_pid", d.PID).Str("how", d.Exit)
	}
	if out := strings.TrimSpace(d.Output); out != "" {
		ev = ev.Str("output", out)
	}
	ev.Msg(msg)
	if w := m.hooks.waiting; w != nil {
		m.hooks.waiting = nil
		if m.stopping && w.Kind == hookOnReady.String() {
			m.log.Info().Str("event", "hook_dropped").Int("gen", w.Generation).Msg("on-ready hook dropped: the master is stopping")
		} else {
			m.startHook(w)
		}
	}
	if d.Hook.Kind == hookOnStopping.String() {
		m.endStopDelayIfDone()
	}
}

// stoppingHookBusy reports whether an on-stopping hook runs or waits.
func (m *Master) stoppingHookBusy() bool {
	on := hookOnStopping.String()
	return (m.hooks.running != nil && m.hooks.running.Kind == on) ||
		(m.hooks.waiting != nil && m.hooks.waiting.Kind == on)
}
