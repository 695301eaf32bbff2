package upgrader

import (
	"sort"
	"time"
)

// Status is a snapshot of a Master.
type Status struct {
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	// Generation is the serving generation, 0 while none serves.
	Generation int  `json:"generation"`
	WorkerPID  int  `json:"worker_pid"`
	Ready      bool `json:"ready"`
	Stopping   bool `json:"stopping"`
	// StopPhase is "delay" during the stop delay (still serving, no
	// longer ready) and "drain" after it; empty unless Stopping.
	StopPhase  string         `json:"stop_phase,omitempty"`
	Workers    []WorkerStatus `json:"workers"`
	LastReload *ReloadStatus  `json:"last_reload,omitempty"`
	// Restarts counts crash restarts since the master started.
	Restarts int `json:"restarts"`
}

// WorkerStatus describes one live worker process.
type WorkerStatus struct {
	Generation int       `json:"generation"`
	PID        int       `json:"pid"`
	State      string    `json:"state"` // starting, probation, serving or draining
	Started    time.Time `json:"started"`
	Status     string    `json:"status,omitempty"` // its last STATUS=
}

// ReloadStatus is how the last reload (start, reload or restart) went.
type ReloadStatus struct {
	At   time.Time `json:"at"`
	Kind string    `json:"kind"` // start, reload or restart
	// Generation is the one serving after it.
	Generation  int     `json:"generation"`
	OK          bool    `json:"ok"`
	Error       string  `json:"error,omitempty"`
	TookSeconds float64 `json:"took_seconds"`
}

func newReloadStatus(r *reload, res Result) *ReloadStatus {
	s := &ReloadStatus{At: r.started, Kind: r.trigger.String(), Generation: res.Generation, OK: res.Err == nil, TookSeconds: res.Took.Seconds()}
	if res.Err != nil {
		s.Error = res.Err.Error()
	}
	return s
}

func (m *Master) currentPID() int {
	if m.current == nil {
		return 0
	}
	return m.current.pid
}

func (m *Master) status() Status {
	s := Status{
		PID:        selfPID,
		Started:    m.started,
		Stopping:   m.stopping,
		LastReload: m.lastReload,
		Restarts:   m.restarts,
	}
	switch {
	case m.delay.active:
		s.StopPhase = "delay"
	case m.stopping:
		s.StopPhase = "drain"
	}
	if m.current != nil {
		s.Generation, s.WorkerPID, s.Ready = m.current.n, m.current.pid, true
	}
	for _, g := range m.live {
		s.Workers = append(s.Workers, WorkerStatus{
			Generation: g.n, PID: g.pid, State: g.state.String(), Started: g.started, Status: g.status.text,
		})
	}
	sort.Slice(s.Workers, func(i, j int) bool { return s.Workers[i].Generation < s.Workers[j].Generation })
	return s
}
