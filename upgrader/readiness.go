package upgrader

import (
	"fmt"
	"strings"
	"time"

	"github.com/baton-sh/baton/notify"
)

// waitEvery is how often a generation that is not ready yet is reported,
// with what baton waits for and what to do about it.
const waitEvery = 10 * time.Second

// statusEvery bounds how often one generation's STATUS= lines are logged:
// a worker sending thousands must not flood baton's log.
const statusEvery = time.Second

// maxStatus is the longest STATUS= text kept; the rest is cut.
const maxStatus = 4096

// statusLine is a generation's last STATUS= text and its logging budget.
type statusLine struct {
	text       string
	loggedAt   time.Time
	suppressed int
}

// notified handles a datagram on the workers' notify socket.
func (m *Master) notified(d notify.Datagram) {
	g, why := m.sender(d.PID)
	if g == nil {
		// Anyone who can reach the socket can send: a flood of strangers'
		// messages must not flood the log.
		now := m.env.now()
		if now.Sub(m.ignored.loggedAt) < statusEvery {
			m.ignored.suppressed++
			return
		}
		ev := m.log.Warn().Int("pid", d.PID).Str("why", why)
		if m.ignored.suppressed > 0 {
			ev = ev.Int("suppressed", m.ignored.suppressed)
		}
		ev.Msg("ignored a notify message")
		m.ignored.loggedAt, m.ignored.suppressed = now, 0
		return
	}
	if d.Err != nil {
		m.log.Warn().Err(d.Err).Int("gen", g.n).Int("pid", d.PID).Msg("worker sent a malformed notify message")
	}
	if s, ok := d.Message["STATUS"]; ok {
		m.statusFrom(g, d.PID, s)
	}
	if d.Message["STOPPING"] == "1" {
		m.log.Info().Int("gen", g.n).Int("pid", d.PID).Stringer("state", g.state).Msg("worker stopping")
		if lost := m.env.checkSockets(g.n); lost != nil {
			m.socketsLost(*lost)
		}
		if g.state == probation && m.inflight != nil && m.inflight.next == g {
			// It stopped being ready within --min-ready: the reload fails
			// and the old generation, never told to drain, serves on.
			m.inflight.next = nil
			m.drain(g)
			m.finishReload(fmt.Errorf("new worker (generation %d, pid %d) said STOPPING=1 within --min-ready %s", g.n, g.pid, m.opts.MinReady))
			return
		}
	}
	if d.Message["READY"] == "1" {
		how := "READY=1"
		if d.PID != g.pid {
			how = fmt.Sprintf("READY=1 from pid %d of its process group", d.PID)
		}
		m.ready(g, how)
	}
}

// sender finds the live generation a notify message belongs to under
// Options.NotifyAccess, or says why it belongs to none.
func (m *Master) sender(pid int) (*generation, string) {
	if pid <= 0 {
		return nil, "the sender's credentials are missing"
	}
	if g := m.live[pid]; g != nil {
		return g, ""
	}
	if m.opts.NotifyAccess == NotifyMain {
		if g := m.live[m.env.processGroup(pid)]; g != nil {
			return nil, fmt.Sprintf("it comes from pid %d of generation %d's process group, not its main process %d, and --notify-access is main", pid, g.n, g.pid)
		}
		return nil, "the sender is not a worker's main process"
	}
	if g := m.live[m.env.processGroup(pid)]; g != nil {
		return g, ""
	}
	return nil, "the sender is not in any worker's process group"
}

func (m *Master) statusFrom(g *generation, pid int, s string) {
	if len(s) > maxStatus {
		s = s[:maxStatus] + "…"
	}
	if s == g.status.text {
		return
	}
	g.status.text = s
	now := m.env.now()
	if now.Sub(g.status.loggedAt) < statusEvery {
		g.status.suppressed++
		return
	}
	ev := m.log.Info().Int("gen", g.n).Int("pid", pid).Str("status", s)
	if g.status.suppressed > 0 {
		ev = ev.Int("suppressed", g.status.suppressed)
	}
	ev.Msg("worker status")
	g.status.loggedAt, g.status.suppressed = now, 0
}

// stillWaiting says, every waitEvery, what a starting generation is
// waiting for.
func (m *Master) stillWaiting(g *generation) {
	if g.state != starting || m.live[g.pid] != g {
		return
	}
	g.waited++
	waited := m.env.now().Sub(g.started).Round(time.Second)
	ev := m.log.Warn().Int("gen", g.n).Int("pid", g.pid).Str("waited", waited.String()).
		Str("ready_timeout", m.opts.ReadyTimeout.String())
	if m.opts.Ready == ReadyNotify {
		if pid, how := m.env.accepting(g.pid); pid != 0 {
			ev = ev.Str("seen", fmt.Sprintf("pid %d %s", pid, how))
			ev.Msg("new worker accepts connections but has not said READY=1: if it cannot notify, run baton with --ready accepting")
			m.env.after(waitEvery, waitTick{g})
			return
		}
	}
	ev.Msg("new worker not ready yet: " + m.waitingFor())
	m.env.after(waitEvery, waitTick{g})
}

// waitingFor says what a starting generation must do to be ready, and
// what to use when it cannot.
func (m *Master) waitingFor() string {
	switch m.opts.Ready {
	case ReadyAccepting:
		return "waiting for one of its processes to wait for connections on a passed socket (in accept, poll, select or epoll_wait), or for READY=1; a server that does not block on the socket (io_uring, busy polling), or runs as another user than baton, is not seen: use --ready notify or delay=DUR"
	case ReadyDelay:
		return "waiting for --ready delay"
	}
	who := "any process of its process group"
	if m.opts.NotifyAccess == NotifyMain {
		who = "its main process (--notify-access main)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "waiting for READY=1 on NOTIFY_SOCKET from %s (--ready notify)", who)
	b.WriteString("; a server that cannot send it wants --ready accepting")
	return b.String()
}
