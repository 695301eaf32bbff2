package upgrader

import (
	"fmt"
	"sort"
	"syscall"
	"time"

	"github.com/baton-sh/baton/internal/host"
)

// Strays are processes the master adopted (as their subreaper) that are
// not workers: left behind by a worker that daemonized (fork, setsid,
// fork, exit), by a child that exited before its own children, or by a
// hook. The env finds them each time the master reaps a child, and only
// then: a process is adopted only when one of its ancestors exits, and
// the master hears of every such exit among its own children. Each stray
// belongs to the worker whose generation and slot it inherited
// (BATON_GENERATION, BATON_WORKER_INDEX), or to a hook (BATON_HOOK).
//
// While its worker's main process runs, a stray is left alone; once that
// has exited (or at a stop) it gets the drain signal, and SIGKILL the
// drain timeout after that exit (or after the stop began). A hook's stray
// is killed at once: the hook has ended. A stray still in a live worker's
// process group is that worker's, drained and killed with its group. A
// stray whose worker is unknown is left alone until the stop.
type stray struct {
	pid     int
	key     workerKey
	comm    string
	pgid    int
	hook    bool
	drained bool
	kill    func()
	killAt  time.Time
}

// workerKey names a worker slot of a generation, as a stray inherited it.
type workerKey struct{ gen, index int }

func (s *stray) String() string { return fmt.Sprintf("process %d (%s)", s.pid, s.comm) }

// adopt files the processes adopted since the last reap.
func (m *Master) adopt() {
	for _, a := range m.env.adopted() {
		s := &stray{pid: a.PID, key: workerKey{a.Generation, a.Index}, comm: a.Comm, pgid: a.PGID, hook: a.Hook}
		m.strays[a.PID] = s
		m.log.Debug().Str("event", "adopted").Int("gen", a.Generation).Int("index", a.Index).Int("pid", a.PID).
			Str("comm", a.Comm).Int("pgid", a.PGID).Bool("hook", a.Hook).Msg("adopted a process that is not a worker")
		m.judge(s)
	}
	now := m.env.now()
	for k, at := range m.ended {
		if now.Sub(at) >= m.opts.DrainTimeout && !m.hasStrays(k) {
			delete(m.ended, k)
		}
	}
}

func (m *Master) hasStrays(k workerKey) bool {
	for _, s := range m.strays {
		if s.key == k {
			return true
		}
	}
	return false
}

// workerRuns reports whether a worker of k has its main process running.
func (m *Master) workerRuns(k workerKey) bool {
	for _, w := range m.workers {
		if w.gen.n == k.gen && w.slot.index == k.index && w.mainExit == "" {
			return true
		}
	}
	return false
}

// judge drains s if its time has come, and arms its SIGKILL.
func (m *Master) judge(s *stray) {
	if s.drained || m.workers[s.pgid] != nil {
		return
	}
	now := m.env.now()
	var killAt time.Time
	switch {
	case s.hook:
		killAt = now
	case m.stopping:
		killAt = m.stopKill
	case s.key.gen == 0 || m.workerRuns(s.key):
		return
	default:
		end, ok := m.ended[s.key]
		if !ok {
			end = now
		}
		killAt = end.Add(m.opts.DrainTimeout)
	}
	s.drained = true
	if !killAt.After(now) {
		what := "killing a process its worker left running"
		if s.hook {
			what = "killing a process a hook left running"
		}
		m.log.Warn().Str("event", "stray_killed").Int("gen", s.key.gen).Int("index", s.key.index).Int("pid", s.pid).
			Str("comm", s.comm).Bool("hook", s.hook).Msg(what)
		m.env.signal(s.pid, syscall.SIGKILL, false)
		return
	}
	m.log.Info().Str("event", "stray_draining").Int("gen", s.key.gen).Int("index", s.key.index).Int("pid", s.pid).
		Str("comm", s.comm).Str("signal", host.SignalName(m.opts.DrainSignal)).Msg("draining a process its worker left running")
	if err := m.tellToDrain(s.pid, false); err != nil {
		m.log.Error().Str("event", "stray_signal_failed").Err(err).Int("pid", s.pid).Msg("cannot signal a process left running")
	}
	s.killAt = killAt
	s.kill = m.env.after(killAt.Sub(now), strayKill{s})
}

// judgeStrays judges the strays of worker k, whose main process exited.
func (m *Master) judgeStrays(k workerKey) {
	for _, s := range m.sortedStrays() {
		if s.key == k {
			m.judge(s)
		}
	}
}

func (m *Master) killStray(s *stray) {
	s.kill = nil
	if m.strays[s.pid] != s {
		return
	}
	m.log.Warn().Str("event", "stray_killed").Int("gen", s.key.gen).Int("index", s.key.index).Int("pid", s.pid).Str("comm", s.comm).
		Str("drain_timeout", m.opts.DrainTimeout.String()).Msg("process left running still there after the drain timeout: killing it")
	m.env.signal(s.pid, syscall.SIGKILL, false)
}

func (m *Master) strayExited(s *stray, how string) {
	delete(m.strays, s.pid)
	if s.kill != nil {
		s.kill()
	}
	m.env.forget(s.pid)
	m.log.Debug().Str("event", "stray_exited").Int("pid", s.pid).Str("how", how).Msg("reaped a process left running")
}

// stopStrays drains every stray at a stop (fast: kills them).
func (m *Master) stopStrays(fast bool) {
	for _, s := range m.sortedStrays() {
		if fast {
			if s.kill != nil {
				s.kill()
				s.kill = nil
			}
			s.drained = true
			m.env.signal(s.pid, syscall.SIGKILL, false)
			continue
		}
		m.judge(s)
	}
}

// daemonized describes a stray of w's that left w's process group, or
// returns "".
func (m *Master) daemonized(w *worker) string {
	for _, s := range m.sortedStrays() {
		if s.key == (workerKey{w.gen.n, w.slot.index}) && s.pgid != w.pid && !s.hook {
			return s.String()
		}
	}
	return ""
}

func (m *Master) sortedStrays() []*stray {
	out := make([]*stray, 0, len(m.strays))
	for _, s := range m.strays {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out
}
