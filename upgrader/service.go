package upgrader

import (
	"fmt"
	"time"

	"github.com/baton-sh/baton/internal/host"
)

// tellService reports lifecycle steps to the master's own service manager
// (Options.ServiceNotify), in the sd_notify terms that Type=notify and
// Type=notify-reload units expect: READY=1 once the first generation
// serves, RELOADING=1 when a requested reload begins and READY=1 when it
// ends (failed or not: the service still serves), STOPPING=1 on stop, and
// a STATUS= line at each step.
func (m *Master) tellService(e Event) {
	if m.opts.ServiceNotify == "" || (m.stopping && e.Kind != Stopping) {
		return // once STOPPING=1 is sent, nothing may claim READY again
	}
	var st host.ServiceState
	switch e.Kind {
	case ReloadStarted:
		switch e.Trigger {
		case TriggerSignal, TriggerControl, TriggerAdmin:
			st = host.ServiceState{Reloading: true, Status: fmt.Sprintf("reloading: starting generation %d", e.Generation)}
		case TriggerStart:
			st.Status = fmt.Sprintf("starting generation %d", e.Generation)
		default:
			st.Status = fmt.Sprintf("replacing worker %d of generation %d (%s)", e.Index, e.Generation, e.Trigger)
		}
	case ReloadComplete:
		st = host.ServiceState{Ready: true, Status: m.servingStatus()}
	case ReloadFailed, RolledBack:
		if m.servingCount() == 0 {
			st.Status = "not serving: " + e.Err.Error()
			break
		}
		st = host.ServiceState{Ready: true, Status: "reload failed: " + e.Err.Error()}
	case Stopping:
		st = host.ServiceState{Stopping: true, Status: "stopping: draining workers"}
	default:
		return
	}
	m.env.tellService(st)
}

// servingStatus is the STATUS= line of a serving master: "serving:
// generation 6, pid 1234", or with several workers "serving: generation
// 6, 4 workers".
func (m *Master) servingStatus() string {
	if len(m.slots) == 1 && m.slots[0].serving != nil {
		return fmt.Sprintf("serving: generation %d, pid %d", m.currentGen(), m.slots[0].serving.pid)
	}
	return fmt.Sprintf("serving: generation %d, %d workers", m.currentGen(), m.servingCount())
}

// keepServiceAlive sends the master's service manager its watchdog
// keep-alive and arms the next one, half an interval on (as
// sd_watchdog_enabled(3) advises). It runs on the loop: a keep-alive says
// the loop still takes events. It goes on while stopping: a drain may
// last longer than the interval, and a manager that has stopped watching
// ignores it.
func (m *Master) keepServiceAlive() {
	if m.feedServiceWatchdog() {
		m.env.after(max(m.opts.ServiceWatchdog/2, serviceWatchdogFloor), serviceWatchdogTick{})
	}
}

// feedServiceWatchdog sends one keep-alive, if the service manager asked
// for them, and says whether it did: also before an in-place upgrade's
// exec, after the loop may have waited up to a second for its callers.
func (m *Master) feedServiceWatchdog() bool {
	if m.opts.ServiceNotify == "" || m.opts.ServiceWatchdog <= 0 {
		return false
	}
	m.env.tellService(host.ServiceState{Watchdog: true})
	return true
}

// serviceWatchdogFloor is the shortest time between two keep-alives. An
// interval under twice this (WATCHDOG_USEC=1, a WatchdogSec= in
// microseconds) cannot be kept by any process; the loop would spend its
// time sending datagrams the manager cannot read as fast, so baton sends
// what it sensibly can and the manager restarts it if that is too little.
const serviceWatchdogFloor = 10 * time.Millisecond
