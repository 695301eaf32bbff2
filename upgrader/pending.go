package upgrader

import "sync"

// pendingRequests are the events that came while the master handed over
// for an in-place upgrade. A reload a signal asked for and a stop are
// handed to the new image (or, if the exec failed, carried out by this
// one); a reload, scale or upgrade with a reply is answered ErrUpgrading,
// and the caller may ask again; a status is answered ErrNotRunning (send
// reports false), and a signal to forward is dropped. Everything else (a
// child's exit, a timer, a notify datagram, a hook's end) is kept in
// order: if the exec fails, this image applies it as if it had just
// come, so no drain deadline or exit is lost to a failed upgrade. If the
// exec succeeds, the exits go with the state (this image reaped them);
// the new image rebuilds the rest from the state (timers as time left,
// groups watched again) and from what it reaps itself.
type pendingRequests struct {
	mu     sync.Mutex
	reload *Trigger
	stop   int // 0 none, 1 graceful, 2 fast
	// later is bounded by the hand-over's short window: a few events per
	// process and timer.
	later []event
}

func (p *pendingRequests) keep(e event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e := e.(type) {
	case reloadReq:
		if e.trigger == TriggerSignal {
			t := e.trigger
			p.reload = &t
		}
		if e.reply != nil {
			e.reply <- Result{Trigger: e.trigger, Err: ErrUpgrading}
		}
	case stopReq:
		if e.fast {
			p.stop = 2
		} else if p.stop == 0 {
			p.stop = 1
		}
	case scaleReq:
		if e.reply != nil {
			e.reply <- Result{Trigger: TriggerScale, Err: ErrUpgrading}
		}
	case upgradeReq:
		e.reply <- UpgradeResult{Err: ErrUpgrading}
	case statusReq, signalReq:
		// Already told: send reported false (ErrNotRunning). USR1,
		// USR2 and WINCH to forward are dropped, as the new image
		// ignores them until it runs (missable in cmd/baton).
	default:
		p.later = append(p.later, e)
	}
}

// exits lists the child exits kept so far: reaped by this image, so the
// new one must be told of them (the reaper stops before the state is
// written, so none comes later).
func (p *pendingRequests) exits() []exitSnapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []exitSnapshot
	for _, e := range p.later {
		if c, ok := e.(childExited); ok {
			out = append(out, exitSnapshot{PID: c.pid, Status: c.status})
		}
	}
	return out
}

// take returns what is pending and forgets it.
func (p *pendingRequests) take() (reload *Trigger, stop int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	reload, stop = p.reload, p.stop
	p.reload, p.stop = nil, 0
	return reload, stop
}

// putBack returns what take took.
func (p *pendingRequests) putBack(reload *Trigger, stop int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reload == nil {
		p.reload = reload
	}
	p.stop = max(p.stop, stop)
}

// applyPending carries out what was asked while the master handed over.
func (m *Master) applyPending() {
	m.pending.mu.Lock()
	later := m.pending.later
	m.pending.later = nil
	m.pending.mu.Unlock()
	for _, e := range later {
		e.apply(m)
	}
	reload, stop := m.pending.take()
	if reload != nil {
		m.beginReload(*reload, nil)
	}
	if stop > 0 {
		m.requestStop(stop == 2)
	}
}
