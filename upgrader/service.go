package upgrader

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/notify"
)

// tellService reports lifecycle steps to the master's own service manager
// (Options.ServiceNotify), in the sd_notify terms that Type=notify and
// Type=notify-reload units expect.
func (m *Master) tellService(e Event) {
	if m.opts.ServiceNotify == "" || (m.stopping && e.Kind != Stopping) {
		return // once STOPPING=1 is sent, nothing may claim READY again
	}
	var msg string
	switch e.Kind {
	case ReloadStarted:
		if e.Trigger != TriggerReload {
			msg = fmt.Sprintf("STATUS=starting generation %d", e.Generation)
			break
		}
		msg = fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%s\nSTATUS=reloading: starting generation %d", monotonicUsec(), e.Generation)
	case ReloadComplete:
		msg = fmt.Sprintf("READY=1\nSTATUS=serving: generation %d, pid %d", e.Generation, m.currentPID())
	case ReloadFailed:
		if e.Generation == 0 {
			msg = "STATUS=not serving: " + e.Err.Error()
			break
		}
		msg = "READY=1\nSTATUS=reload failed: " + e.Err.Error()
	case Stopping:
		msg = "STOPPING=1\nSTATUS=stopping: draining workers"
	default:
		return
	}
	if err := notify.SendTo(m.opts.ServiceNotify, msg); err != nil {
		m.log.Warn().Err(err).Msg("cannot notify the service manager")
	}
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which systemd compares
// with the time it sent SIGHUP to match a RELOADING=1 to its reload.
func monotonicUsec() string {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return strconv.FormatInt(ts.Nano()/1000, 10)
}
