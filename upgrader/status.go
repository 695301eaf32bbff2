package upgrader

import (
	"time"
)

// Status is a snapshot of a Master.
type Status struct {
	PID int `json:"pid"`
	// Version is the running image's, as `baton version` prints it.
	Version string    `json:"version,omitempty"`
	Started time.Time `json:"started"`
	// Upgraded is when this image took over in place (Upgrade); absent
	// if it never did.
	Upgraded *time.Time `json:"upgraded,omitempty"`
	// Generation is the generation the service runs: the one the last
	// completed reload rolled out, 0 before the first.
	Generation int `json:"generation"`
	// WorkerPID is the serving worker of slot 0, 0 while none serves.
	WorkerPID int `json:"worker_pid"`
	// Ready: at least one worker serves.
	Ready    bool `json:"ready"`
	Stopping bool `json:"stopping"`
	// StopPhase is "delay" during the stop delay (still serving, no
	// longer ready) and "drain" after it; empty unless Stopping.
	StopPhase string `json:"stop_phase,omitempty"`
	// WorkerCount is how many workers the master runs when all is well.
	WorkerCount int `json:"worker_count"`
	// Workers lists every live worker process, by slot, generation and
	// PID.
	Workers    []WorkerStatus `json:"workers"`
	LastReload *ReloadStatus  `json:"last_reload,omitempty"`
	// LastSuccess is when the last reload or replacement that succeeded
	// ended.
	LastSuccess *time.Time `json:"last_success,omitempty"`
	// Restarts counts crash restarts since the master started.
	Restarts int `json:"restarts"`
}

// WorkerStatus describes one live worker process.
type WorkerStatus struct {
	Index      int    `json:"index"`
	Generation int    `json:"generation"`
	PID        int    `json:"pid"`
	State      string `json:"state"` // starting, serving or draining
	// Probation is set while a ready worker serves beside the one it
	// replaces (--min-ready) or waits for the rest of its batch.
	Probation bool `json:"probation,omitempty"`
	// Killed is set once baton has sent SIGKILL to the worker's process
	// group (its drain timeout passed, --max-draining cut its drain short,
	// or a fast stop): it is no longer draining, only not yet reaped, and
	// does not count toward --max-draining.
	Killed     bool       `json:"killed,omitempty"`
	Started    time.Time  `json:"started"`
	ReadySince *time.Time `json:"ready_since,omitempty"`
	Restarts   int        `json:"restarts"`         // its slot's crash restarts
	Status     string     `json:"status,omitempty"` // its last STATUS=
}

// ReloadStatus is how the last reload or replacement went.
type ReloadStatus struct {
	At      time.Time `json:"at"`
	Trigger string    `json:"trigger"`
	// Result is ok, failed or rolled_back.
	Result string `json:"result"`
	// Generation is the one serving after it.
	Generation  int     `json:"generation"`
	OK          bool    `json:"ok"`
	Error       string  `json:"error,omitempty"`
	TookSeconds float64 `json:"took_seconds"`
}

func newReloadStatus(at time.Time, res Result) *ReloadStatus {
	s := &ReloadStatus{At: at, Trigger: res.Trigger.String(), Result: res.Outcome(), Generation: res.Generation,
		OK: res.Err == nil, TookSeconds: res.Took.Seconds()}
	if res.Err != nil {
		s.Error = res.Err.Error()
	}
	return s
}

func (m *Master) status() Status {
	s := Status{
		PID:         selfPID,
		Version:     m.opts.Version,
		Started:     m.started,
		Generation:  m.currentGen(),
		Stopping:    m.stopping,
		WorkerCount: len(m.slots),
		LastReload:  m.lastReload,
		Restarts:    m.restarts,
		Ready:       m.servingCount() > 0,
		Workers:     []WorkerStatus{},
	}
	if !m.lastSuccess.IsZero() {
		at := m.lastSuccess
		s.LastSuccess = &at
	}
	if !m.upgraded.IsZero() {
		at := m.upgraded
		s.Upgraded = &at
	}
	switch {
	case m.delay.active:
		s.StopPhase = "delay"
	case m.stopping:
		s.StopPhase = "drain"
	}
	if len(m.slots) > 0 && m.slots[0].serving != nil {
		s.WorkerPID = m.slots[0].serving.pid
	}
	for _, w := range m.sortedWorkers() {
		ws := WorkerStatus{Index: w.slot.index, Generation: w.gen.n, PID: w.pid, State: w.state.String(),
			Started: w.started, Restarts: w.slot.restarts, Status: w.status.text, Killed: w.killed}
		if w.state == probation || w.state == held {
			ws.State, ws.Probation = starting.String(), true
		}
		if !w.readyAt.IsZero() {
			at := w.readyAt
			ws.ReadySince = &at
		}
		s.Workers = append(s.Workers, ws)
	}
	return s
}
