package upgrader

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/baton-sh/baton/notify"
	"github.com/rs/zerolog"
)

// waitEvery is how often a worker that is not ready yet is reported, with
// what baton waits for and what to do about it.
const waitEvery = 10 * time.Second

// statusEvery bounds how often one worker's STATUS= lines, and its other
// notify lines (STOPPING=1, malformed messages, messages not heeded), are
// logged: a worker sending thousands must not flood baton's log.
const statusEvery = time.Second

// maxStatus is the longest STATUS= text kept; the rest is cut.
const maxStatus = 4096

// statusLine is a log budget: a worker's last STATUS= text and when it
// was logged, or when its other notify lines were.
type statusLine struct {
	text       string
	loggedAt   time.Time
	suppressed int
}

// spend reports whether a line may be logged now, and adds the count of
// those suppressed since the last one to ev.
func (b *statusLine) spend(now time.Time, ev *zerolog.Event) bool {
	if !b.loggedAt.IsZero() && now.Sub(b.loggedAt) < statusEvery {
		b.suppressed++
		return false
	}
	if b.suppressed > 0 {
		ev.Int("suppressed", b.suppressed)
	}
	b.loggedAt, b.suppressed = now, 0
	return true
}

// notified handles a datagram on worker pid's own notify socket. Every
// process that has the socket's path, which only the worker's descendants
// and root can reach, speaks for the worker (--notify-access all), or
// only its main process (main).
func (m *Master) notified(pid int, d notify.Datagram) {
	w := m.workers[pid]
	if w == nil {
		return // a late message from a worker already gone
	}
	now := m.env.now()
	if m.opts.NotifyAccess == NotifyMain && d.PID != w.pid {
		ev := m.log.Warn().Str("event", "notify_ignored").Int("gen", w.gen.n).Int("pid", d.PID)
		if w.budget.spend(now, ev) {
			ev.Msg(fmt.Sprintf("ignored a notify message: it comes from pid %d, not worker %d's main process %d, and --notify-access is main", d.PID, w.slot.index, w.pid))
		}
		return
	}
	if d.Err != nil {
		ev := m.log.Warn().Str("event", "notify_malformed").Err(d.Err).Int("gen", w.gen.n).Int("pid", d.PID)
		if w.budget.spend(now, ev) {
			ev.Msg("worker sent a malformed notify message")
		}
	}
	if s, ok := d.Message["STATUS"]; ok {
		m.statusFrom(w, d.PID, s)
	}
	if ping, usec := d.Message["WATCHDOG"], d.Message["WATCHDOG_USEC"]; ping != "" || usec != "" {
		m.watchdogNotice(w, ping, usec)
	}
	if ext, ok := d.Message["EXTEND_TIMEOUT_USEC"]; ok && w.state == starting && m.opts.Ready != ReadyDelay {
		m.extendStart(w, ext)
	}
	if d.Message["STOPPING"] == "1" {
		ev := m.log.Info().Str("event", "worker_stopping").Int("gen", w.gen.n).Int("index", w.slot.index).Int("pid", d.PID).Stringer("state", w.state)
		if w.budget.spend(now, ev) {
			ev.Msg("worker stopping")
		}
		m.checkSockets(w.gen.n)
		if w.state == probation || w.state == held {
			// It stopped being ready within --min-ready: it does not take
			// over, and the worker it would replace, never told to drain,
			// serves on.
			m.drain(w)
			m.incomingFailed(w, fmt.Errorf("new worker (%s) said STOPPING=1 within --min-ready %s", m.who(w), m.opts.MinReady))
			return
		}
	}
	if d.Message["READY"] == "1" {
		how := "READY=1"
		if d.PID != w.pid {
			how = fmt.Sprintf("READY=1 from pid %d, a process of the worker", d.PID)
		}
		m.ready(w, how)
	}
}

func (m *Master) statusFrom(w *worker, pid int, s string) {
	if len(s) > maxStatus {
		s = s[:maxStatus] + "…"
	}
	if s == w.status.text {
		return
	}
	w.status.text = s
	ev := m.log.Info().Str("event", "worker_status").Int("gen", w.gen.n).Int("index", w.slot.index).Int("pid", pid).Str("status", s)
	if w.status.spend(m.env.now(), ev) {
		ev.Msg("worker status")
	}
}

// stillWaiting says, every waitEvery, what a starting worker waits for.
func (m *Master) stillWaiting(w *worker) {
	if w.state != starting || m.workers[w.pid] != w {
		return
	}
	w.waited++
	waited := m.env.now().Sub(w.started).Round(time.Second)
	ev := m.log.Warn().Str("event", "still_waiting").Int("gen", w.gen.n).Int("index", w.slot.index).Int("pid", w.pid).
		Str("waited", waited.String()).Str("ready_timeout", m.opts.ReadyTimeout.String())
	m.env.after(waitEvery, waitTick{w})
	if m.opts.Ready == ReadyNotify {
		if pid, how := m.env.accepting(w.pid); pid != 0 {
			ev.Str("seen", fmt.Sprintf("pid %d %s", pid, how)).
				Msg("new worker accepts connections but has not said READY=1: if it cannot notify, run baton with --ready accepting")
			return
		}
	}
	ev.Msg("new worker not ready yet: " + m.waitingFor())
}

// waitingFor says what a starting worker must do to be ready, and what to
// use when it cannot.
func (m *Master) waitingFor() string {
	switch m.opts.Ready {
	case ReadyAccepting:
		return "waiting for one of its processes to wait for connections on a passed socket (in accept, poll, select or epoll_wait), or for READY=1; a server that does not block on the socket (io_uring, busy polling), or runs as another user than baton, is not seen: use --ready notify or delay=DUR"
	case ReadyDelay:
		return "waiting for --ready delay"
	}
	who := "any of its processes"
	if m.opts.NotifyAccess == NotifyMain {
		who = "its main process (--notify-access main)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "waiting for READY=1 on NOTIFY_SOCKET from %s (--ready notify)", who)
	b.WriteString("; a server that cannot send it wants --ready accepting")
	return b.String()
}

// extendStart handles EXTEND_TIMEOUT_USEC= from a starting worker: its
// ready timeout runs out that long from now, if that is later, as systemd
// extends a service's start timeout.
func (m *Master) extendStart(w *worker, usec string) {
	n, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || n <= 0 {
		return
	}
	until := m.env.now().Add(time.Duration(n) * time.Microsecond)
	if !until.After(w.deadline) {
		return
	}
	w.deadline = until
	m.arm(w, until.Sub(m.env.now()))
	m.log.Info().Str("event", "start_extended").Int("gen", w.gen.n).Int("index", w.slot.index).Int("pid", w.pid).
		Str("until", until.Sub(w.started).Round(time.Millisecond).String()).Msg("new worker asked for more time to start")
}
