package upgrader

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// rollout is one reload: it moves every slot to a new generation. It goes
// in batches: a batch starts a new worker for each of its slots, at most
// MaxSurge of them beside a serving worker (a slot with nothing serving
// costs no surge), and takes over only when every worker of the batch is
// ready (and through its probation); then the workers it replaces drain
// and the next batch starts. The rollout ends when every slot serves the
// new generation and every worker it told to drain has exited.
//
// When a new worker fails (exits, is not ready within ReadyTimeout, dies
// or says STOPPING=1 on probation, or dies after taking over while the
// rollout is still under way), the rollout fails: every new worker not yet
// serving is drained, and the slots already moved are moved back, the same
// way, to the generation each ran before, whose workers start from that
// generation's recorded release. If that fails too, what serves is kept.
type rollout struct {
	trigger Trigger
	started time.Time
	to      *generation // nil for the rollback of a failed rollout
	was     *generation // the current generation when it began
	moves   []*move     // every slot it moves, in slot order
	todo    []*move     // not begun
	batch   []*move     // begun, not yet taken over
	old     map[*worker]bool
	waiters []chan<- Result
	// failure is why it failed; it then moves the slots back.
	failure  error
	rollback bool
	// probeFailedBefore: the service failed its probe when the rollout
	// began, so a failing probe does not veto it.
	probeFailedBefore bool
}

// move is one slot's replacement within a rollout.
type move struct {
	s        *slot
	to, from *generation
	w        *worker // its incoming worker, once started
	done     bool    // w took over
}

// moving is the move whose incoming worker is w, if w is in the batch.
func (r *rollout) moving(w *worker) *move {
	for _, mv := range r.batch {
		if mv.w == w {
			return mv
		}
	}
	return nil
}

// covering is the move of slot s, if the rollout moves it.
func (r *rollout) covering(s *slot) *move {
	for _, mv := range r.moves {
		if mv.s == s {
			return mv
		}
	}
	return nil
}

// drop removes mv from the batch.
func (r *rollout) drop(mv *move) {
	for i, b := range r.batch {
		if b == mv {
			r.batch = append(r.batch[:i], r.batch[i+1:]...)
			return
		}
	}
}

// hurry puts a move not begun at the head of the queue: its slot has
// nothing serving any more.
func (r *rollout) hurry(mv *move) {
	for i, t := range r.todo {
		if t == mv {
			r.todo = append([]*move{mv}, append(r.todo[:i:i], r.todo[i+1:]...)...)
			return
		}
	}
}

// emptyFirst orders moves for the queue: slots with nothing serving
// first, then in slot order.
func emptyFirst(moves []*move) []*move {
	out := append([]*move(nil), moves...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].s.empty() && !out[j].s.empty() })
	return out
}

// rolled reports whether every move has taken over.
func (r *rollout) rolled() bool { return len(r.todo) == 0 && len(r.batch) == 0 }

// surge is how many incoming workers may run beside serving ones.
func (m *Master) surge() int {
	if m.opts.MaxSurge <= 0 || m.opts.MaxSurge > len(m.slots) {
		return len(m.slots)
	}
	return m.opts.MaxSurge
}

// beginReload starts a rollout of a new generation, or queues the request
// behind the one under way.
func (m *Master) beginReload(t Trigger, reply chan<- Result) {
	if m.stopping {
		m.log.Info().Str("event", "reload_ignored").Stringer("trigger", t).Msg("reload requested while stopping: ignored")
		if reply != nil {
			reply <- Result{Generation: m.currentGen(), Err: ErrStopping}
		}
		return
	}
	if t != TriggerRestore && t != TriggerStart {
		// A reload on sockets nothing can reach would report success for
		// a service nobody can use: a lost socket is restored first, and
		// this reload queued behind the restore.
		m.checkSockets(0)
	}
	if r := m.rollout; r != nil && r.rolled() {
		// Every slot has moved: only old workers drain. The next reload
		// begins now; that one ends when they are gone.
		m.supersede(r)
	}
	if r := m.rollout; r != nil || len(m.upgrade.waiters) > 0 {
		if m.queued == nil {
			m.queued = &rollout{trigger: t}
			if r != nil {
				m.log.Info().Str("event", "reload_queued").Stringer("trigger", t).Int("gen", r.gen()).
					Msg("reload requested during a reload: queued to run after it")
			} else {
				m.log.Info().Str("event", "reload_queued").Stringer("trigger", t).
					Msg("reload requested while an upgrade waits: it runs after the upgrade")
			}
		}
		if reply != nil {
			m.queued.waiters = append(m.queued.waiters, reply)
		}
		return
	}
	r := &rollout{trigger: t}
	if reply != nil {
		r.waiters = append(r.waiters, reply)
	}
	m.run(r)
}

// run begins rollout r: it resolves the release, makes the generation and
// moves every slot to it.
func (m *Master) run(r *rollout) {
	r.started = m.env.now()
	r.old = map[*worker]bool{}
	r.was = m.current
	r.probeFailedBefore = m.heals.probe.seen && !m.heals.probe.ok
	m.heals.probe.excused = false
	m.rollout = r
	m.lastGen++
	n := m.lastGen
	m.emit(Event{Kind: ReloadStarted, Generation: n, Trigger: r.trigger}, m.log.Info())
	rel, err := m.env.resolve()
	if err != nil {
		r.failure = fmt.Errorf("cannot start generation %d: %w", n, err)
		m.finish(r)
		return
	}
	r.to = &generation{n: n, release: rel}
	for _, s := range m.slots {
		m.cancelReplacement(s)
		r.moves = append(r.moves, &move{s: s, to: r.to, from: s.gen})
	}
	r.todo = emptyFirst(r.moves)
	m.advance(r)
}

// advance starts r's next batch once the last one has taken over, and
// notes when every slot has moved.
func (m *Master) advance(r *rollout) {
	for m.rollout == r && len(r.todo) > 0 {
		// A slot with nothing serving costs no surge and is never held
		// back; at most surge others start beside their serving workers.
		// They take over together (batchReady), which empties the batch
		// for the next ones.
		mv := r.todo[0]
		if !mv.s.empty() && m.batchSurge(r) >= m.surge() {
			break
		}
		r.todo = r.todo[1:]
		r.batch = append(r.batch, mv)
		w, err := m.startWorker(mv.s, mv.to, r.trigger)
		if err != nil {
			m.rolloutFailed(r, err)
			return
		}
		mv.w = w
	}
	if m.rollout == r && r.rolled() {
		m.rolledOut(r)
	}
}

// batchSurge is how many of the batch's workers start beside a serving one.
func (m *Master) batchSurge(r *rollout) int {
	n := 0
	for _, mv := range r.batch {
		if !mv.s.empty() {
			n++
		}
	}
	return n
}

// batchReady takes the batch over once every worker of it that replaces
// a serving one is held: ready and through its probation.
func (m *Master) batchReady(r *rollout) {
	var ready []*worker
	for _, mv := range r.batch {
		switch {
		case mv.s.empty():
		case mv.w == nil || mv.w.state != held:
			return
		default:
			ready = append(ready, mv.w)
		}
	}
	for _, w := range ready {
		m.takeOver(w)
	}
	m.advance(r)
}

// rolledOut handles a rollout whose slots have all moved.
func (m *Master) rolledOut(r *rollout) {
	defer m.nextHeal() // replacements that waited for the slots to move
	if !r.rollback && r.failure == nil {
		m.current = r.to
		m.runHook(hookOnReady, r.to)
	}
	m.armProbe()
	m.maybeFinish(r)
	if m.rollout == r && m.queued != nil && len(m.upgrade.waiters) == 0 {
		q := m.queued
		m.queued = nil
		m.supersede(r)
		m.run(q)
	}
}

// supersede moves r, which has moved every slot, aside: it finishes once
// its old workers have exited, and the next rollout may begin.
func (m *Master) supersede(r *rollout) {
	if m.rollout == r {
		m.rollout = nil
		m.finishing = append(m.finishing, r)
	}
}

// maybeFinish ends r once every slot has moved and every worker it told to
// drain has exited.
func (m *Master) maybeFinish(r *rollout) {
	if r.rolled() && len(r.old) == 0 {
		m.finish(r)
	}
}

// drained notes that w, which a rollout told to drain, is gone.
func (m *Master) drained(w *worker) {
	for _, r := range append([]*rollout{m.rollout}, m.finishing...) {
		if r != nil && r.old[w] {
			delete(r.old, w)
			m.maybeFinish(r)
			return
		}
	}
}

// rolloutFailed turns r into a rollback of the slots it moved, or, if it
// is one already, gives up and keeps what serves.
func (m *Master) rolloutFailed(r *rollout, why error) {
	if r.failure != nil {
		m.abandonRollback(r, why)
		return
	}
	r.failure = why
	m.current = r.was
	m.stopBatch(r)
	var back []*move
	for _, mv := range r.moves {
		if mv.done && mv.from != nil {
			back = append(back, &move{s: mv.s, to: mv.from, from: mv.to})
		}
	}
	if len(back) == 0 {
		m.finish(r)
		m.refill(why)
		return
	}
	ev := m.log.Error().Str("event", "rolling_back").Err(why).Int("gen", r.to.n)
	for _, mv := range back {
		mv.s.gen = mv.to
		ev = ev.Int(fmt.Sprint("worker_", mv.s.index), mv.to.n)
	}
	ev.Msg("the new generation failed: moving the workers it replaced back to the generation each ran before")
	r.rollback = true
	r.moves, r.todo = back, emptyFirst(back)
	m.advance(r)
	m.refill(why)
}

// refill restarts, as after a crash, every slot left with nothing serving
// and nothing to start it: one whose old worker died during a rollout and
// whose new worker then failed is no move back, yet it must serve again.
func (m *Master) refill(why error) {
	for _, s := range m.slots {
		if m.stopping {
			return
		}
		if s.empty() && s.incoming == nil && s.restartDue == nil && (m.rollout == nil || m.rollout.covering(s) == nil) {
			m.crashed(s, time.Time{}, why)
		}
	}
}

// stopBatch drains every incoming worker of r's batch and forgets what r
// had not begun.
func (m *Master) stopBatch(r *rollout) {
	for _, mv := range r.batch {
		if w := mv.w; w != nil && m.workers[w.pid] == w && w.state.incoming() {
			mv.s.incoming = nil
			m.drain(w)
		}
	}
	r.batch, r.todo = nil, nil
}

// abandonRollback ends a rollback that failed too: what serves is kept,
// and a slot with nothing serving is restarted like after a crash.
func (m *Master) abandonRollback(r *rollout, why error) {
	m.stopBatch(r)
	r.failure = fmt.Errorf("%w; moving back failed too (%v): keeping what serves", r.failure, why)
	r.rollback = false
	m.log.Error().Str("event", "rollback_failed").Err(why).Msg("moving back to the previous generation failed: keeping what serves")
	for _, s := range m.slots {
		if !s.empty() {
			s.gen = s.serving.gen
		}
	}
	m.finish(r)
	m.refill(why)
}

// finish ends the rollout under way, answers everyone waiting for it, and
// starts what was queued behind it.
func (m *Master) finish(r *rollout) {
	defer m.nextHeal() // replacements that waited for the slots to move
	if m.rollout == r {
		m.rollout = nil
	} else {
		for i, f := range m.finishing {
			if f == r {
				m.finishing = append(m.finishing[:i], m.finishing[i+1:]...)
				break
			}
		}
	}
	took := m.env.now().Sub(r.started)
	res := Result{Generation: m.currentGen(), Took: took, Trigger: r.trigger}
	kind := ReloadComplete
	switch {
	case r.failure == nil:
	case r.rollback:
		kind, res.RolledBack = RolledBack, true
		res.Err = fmt.Errorf("%w; rolled back: generation %d is serving", r.failure, m.currentGen())
	case errors.Is(r.failure, ErrStopping):
		kind, res.Err = ReloadFailed, r.failure
	default:
		kind, res.Err = ReloadFailed, r.failure
		if m.servingCount() > 0 && r.trigger != TriggerStart {
			res.Err = fmt.Errorf("%w; generation %d is still serving", r.failure, m.currentGen())
		}
	}
	if m.lastReload == nil || !r.started.Before(m.lastReload.At) {
		// A superseded reload that ends after a newer one is not the last.
		m.lastReload = newReloadStatus(r.started, res)
	}
	if r.failure == nil {
		m.lastSuccess = m.env.now()
		for _, s := range m.slots {
			if s.serving != nil && s.serving.gen == r.to {
				m.env.tookOver(s.serving.pid) // what it replaced is gone
			}
		}
	}
	ev := m.log.Info()
	if res.Err != nil {
		ev = m.log.Error().Err(res.Err)
	}
	gen := res.Generation
	if r.failure == nil && r.to != nil {
		gen = r.to.n // a superseded one may end after newer ones
	}
	m.emit(Event{Kind: kind, Generation: gen, Took: took, Trigger: r.trigger, Err: res.Err}, ev)
	for _, w := range r.waiters {
		w <- res
	}
	switch {
	case m.stopping:
		return
	case res.Err != nil && r.trigger == TriggerStart:
		m.exitErr = &StartupError{r.failure}
		m.stop(false)
		return
	case m.rollout != nil:
		return // a newer one is under way
	}
	if q := m.queued; q != nil && len(m.upgrade.waiters) == 0 {
		m.queued = nil
		m.run(q)
		return
	}
	m.applyScale()
}

// abandonReloads ends the reload under way and the one queued, as a stop
// does: nothing starts any more.
func (m *Master) abandonReloads() {
	for _, s := range m.slots {
		m.cancelRestart(s)
	}
	if q := m.queued; q != nil {
		m.queued = nil
		for _, w := range q.waiters {
			w <- Result{Generation: m.currentGen(), Trigger: q.trigger, Err: ErrStopping}
		}
	}
	// An upgrade that waited (or whose check runs) will not happen.
	for _, w := range m.upgrade.waiters {
		w <- UpgradeResult{From: m.opts.Version, Err: ErrStopping}
	}
	m.upgrade.waiters = nil
	for _, r := range append([]*rollout(nil), m.finishing...) {
		m.finish(r) // every slot moved; the stop finishes their drain
	}
	if r := m.rollout; r != nil {
		if r.rolled() && r.failure == nil {
			// Every slot moved; only the old workers' drain was left, and
			// the stop finishes that.
			m.finish(r)
			return
		}
		r.batch, r.todo = nil, nil // drained with the others
		r.rollback = false
		r.failure = ErrStopping
		m.finish(r)
	}
	m.answerScale(ErrStopping)
}

func (m *Master) currentGen() int {
	if m.current == nil {
		return 0
	}
	return m.current.n
}

// gen is the generation r rolls out, 0 for a rollback.
func (r *rollout) gen() int {
	if r.to != nil {
		return r.to.n
	}
	return 0
}
