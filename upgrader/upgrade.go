package upgrader

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/host"
)

// An in-place upgrade (Master.Upgrade) re-executes the master's binary,
// as it is on disk now, in the master's own process: the PID stays, the
// workers stay its children, and every descriptor the master holds (the
// sockets, the pidfile's lock, the control and admin sockets, the notify
// sockets, the pidfds, the keeper's socket) stays open across the exec.
// The old image hands the new one its state (HandOver, JSON, versioned)
// through a descriptor, and the new one carries on from it.
//
// It runs only when the master is quiet (see quiet): no reload moving
// workers, no worker starting, no hook, probe or self-healing replacement
// running, no scale under way, no stop begun; it waits for that, and a reload asked for meanwhile runs
// first. Workers that drain carry on draining, on their old deadline.
//
// It never leaves a broken master: first the new binary runs in a check
// mode (UpgradeOptions.CheckTimeout at most), given the state it would be handed
// on stdin and the master's own flags, and must say its version and exit
// 0; any failure (not executable, wrong architecture, a crash, a state
// version or a flag it does not know) refuses the upgrade with the reason,
// and this master carries on untouched. A signal that arrives during the
// exec itself is the caller's to provide for (UpgradeOptions.Quiesce: the
// baton command misses a reload, scale or forward signal then, and lets a
// stop signal end it, its keeper draining the workers); one the old image
// caught just before is handed over.

// UpgradeOptions makes a Master upgradable in place (Options.Upgrade).
type UpgradeOptions struct {
	// Path is the binary to execute: the one the master was started from,
	// as the user named it, so that a binary a package manager or a deploy
	// replaced (or a symbolic link moved) is what runs. It is opened once,
	// as the check begins; the check and the exec both run that file
	// (host.Image), never what the path names by the time of the exec.
	Path string
	// Args is the new image's argv, Env its environment (the master's).
	Args, Env []string
	// Carry gives, just before the exec, the descriptors the caller hands
	// over by name (kept open across it) and data of its own.
	Carry func() (files map[string]int, data json.RawMessage, err error)
	// Quiesce is called once the Master stops taking requests for the
	// exec: the caller sets the signals it can afford to miss to be
	// ignored (a Go program ends on a HUP that arrives before it asks for
	// it), then passes on every signal already caught, which reaches the
	// hand-over as a pending reload or stop. undo, called if the exec
	// failed, takes the signals back.
	Quiesce func() (undo func())
	// BeforeExec is called last, to flush logs. A stop asked for by the
	// time it returns calls the exec off: the caller passes on the stop
	// signals it caught, and from then on lets them end the process.
	BeforeExec func()
	// CheckTimeout bounds the check run (DefaultUpgradeCheckTimeout).
	CheckTimeout time.Duration
}

// DefaultUpgradeCheckTimeout bounds the check run of a new binary.
const DefaultUpgradeCheckTimeout = 10 * time.Second

// StateVersion is the version of HandOver this build writes; it reads
// every version from OldestStateVersion on. A build refuses to take over
// from a state of a version it does not know, so its check run fails and
// the old master carries on. Version 2 added the workers' output pipes
// (host.State.Outputs): a version-1 build would take over without reading
// them, and each logging worker would block once its pipe filled.
const (
	StateVersion       = 2
	OldestStateVersion = 1
)

// HandOver is what a master hands its own new image.
type HandOver struct {
	Version int       `json:"version"`
	From    string    `json:"from"` // the old image's version
	At      time.Time `json:"at"`
	// Mono is env.monotonic at the hand-over: time left is measured from
	// it (from At, the wall clock, for a state written without it).
	Mono   time.Duration `json:"mono,omitempty"`
	Engine engineState
	Host   host.State `json:"host"`
	// Files and Data are the caller's (UpgradeOptions.Carry).
	Files map[string]int  `json:"files,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// UpgradeResult answers Upgrade when the upgrade was refused, or, just
// before the exec, with the versions. Sent, if called, says the answer has
// reached the caller; the exec waits for it (a second at most). Failed is
// closed if the exec then failed and this image carries on; otherwise the
// exec ends whoever waits on it.
type UpgradeResult struct {
	From, To string
	Err      error
	Sent     func()
	Failed   <-chan struct{}
}

// ErrUpgrading is the result of a request the master could not take
// because it was executing its new image.
var ErrUpgrading = errors.New("master is upgrading in place")

// upgradeState is the loop's view of an upgrade asked for.
type upgradeState struct {
	waiters  []chan<- UpgradeResult
	checking bool
}

// Upgrade asks for an in-place upgrade; see UpgradeOptions. The returned
// channel receives the outcome's first word: a refusal, or the versions
// just before the exec (after which this process runs the new image).
func (m *Master) Upgrade() <-chan UpgradeResult {
	c := make(chan UpgradeResult, 1)
	if !m.send(upgradeReq{c}) {
		select {
		case c <- UpgradeResult{Err: ErrNotRunning}:
		default: // answered as the master handed over
		}
	}
	return c
}

type (
	upgradeReq     struct{ reply chan<- UpgradeResult }
	upgradeChecked struct {
		to  string
		err error
		img *host.Image // the binary checked, to execute; nil if none
	}
)

func (e upgradeReq) apply(m *Master)     { m.upgradeAsked(e.reply) }
func (e upgradeChecked) apply(m *Master) { m.upgradeCheckDone(e.to, e.err, e.img) }

func (m *Master) upgradeAsked(reply chan<- UpgradeResult) {
	switch {
	case m.opts.Upgrade == nil:
		reply <- UpgradeResult{Err: errors.New("this master cannot upgrade in place")}
		return
	case m.stopping:
		reply <- UpgradeResult{Err: ErrStopping}
		return
	case m.opts.Protocol != ProtocolSystemd:
		reply <- UpgradeResult{Err: fmt.Errorf("an in-place upgrade keeps workers of --protocol systemd only, not %s: restart baton instead", m.opts.Protocol)}
		return
	}
	m.upgrade.waiters = append(m.upgrade.waiters, reply)
	if len(m.upgrade.waiters) == 1 && !m.quiet() {
		m.log.Info().Str("event", "upgrade_waits").Msg("upgrade asked for: it waits for the reload or replacement under way")
	}
}

// quiet reports whether nothing is under way that an upgrade must not
// cut: workers may serve and drain, nothing else.
func (m *Master) quiet() bool {
	if (m.rollout != nil && !m.rollout.rolled()) || m.scaling != nil || len(m.scaleWaiters) > 0 ||
		m.hooks.running != nil || m.hooks.waiting != nil || m.healingSlot() != nil || m.heals.probe.inFlight ||
		m.stopping || m.delay.active {
		return false
	}
	for _, s := range m.slots {
		if s.incoming != nil {
			return false
		}
	}
	return true
}

// maybeUpgrade begins the check run of an upgrade asked for, once the
// master is quiet. The loop calls it after every event.
func (m *Master) maybeUpgrade() {
	u := &m.upgrade
	if len(u.waiters) == 0 || u.checking || !m.quiet() {
		return
	}
	ho, err := m.handOverState(host.State{}, nil, nil)
	var state []byte
	if err == nil {
		state, err = json.Marshal(ho)
	}
	if err != nil {
		m.refuseUpgrade(fmt.Errorf("cannot describe the master's state: %w", err))
		return
	}
	u.checking = true
	o := m.opts.Upgrade
	m.log.Info().Str("event", "upgrade_check").Str("path", o.Path).Msg("checking the new binary before the in-place upgrade")
	m.env.checkUpgrade(o.Path, o.Args, append(o.Env[:len(o.Env):len(o.Env)], envnames.UpgradeCheck+"=1"), state, o.CheckTimeout)
}

// CheckOK starts the line a new binary's check run prints when it can take
// over, followed by its version.
const CheckOK = "baton upgrade check ok: "

// upgradeCheckDone executes img, the very binary checked (whatever is at
// its path by now), if it passed its check and the master is still quiet.
func (m *Master) upgradeCheckDone(out string, err error, img *host.Image) {
	m.upgrade.checking = false
	defer img.Close() // here only if no exec happened
	// The version is the rest of the first line: whatever else the check
	// printed goes into no log line, answer or status.
	line, _, _ := strings.Cut(out, "\n")
	to, ok := strings.CutPrefix(strings.TrimSpace(line), CheckOK)
	switch {
	case err != nil:
	case !ok:
		err = fmt.Errorf("it does not speak baton's upgrade check (it said %.80q): is it a baton binary?", out)
	case len(to) > 200 || !utf8.ValidString(to):
		err = fmt.Errorf("its version is not a short line of text (it said %.80q)", line)
	}
	switch {
	case err != nil:
		m.refuseUpgrade(fmt.Errorf("the new binary %s failed its check: %w; this master carries on", m.opts.Upgrade.Path, err))
	case !m.quiet():
		m.maybeUpgrade() // something began meanwhile: check again later
	default:
		m.execUpgrade(to, img)
	}
}

func (m *Master) refuseUpgrade(err error) {
	m.log.Error().Str("event", "upgrade_refused").Err(err).Msg("in-place upgrade refused")
	for _, w := range m.upgrade.waiters {
		w <- UpgradeResult{From: m.opts.Version, Err: err}
	}
	m.upgrade.waiters = nil
	m.runQueued()
}

// runQueued starts the reload that waited for an upgrade, if nothing else
// runs.
func (m *Master) runQueued() {
	if q := m.queued; q != nil && m.rollout == nil && !m.stopping {
		m.queued = nil
		m.run(q)
	}
}

// execUpgrade hands everything over and executes the new image. It
// returns only if the exec failed, with the master as it was.
func (m *Master) execUpgrade(to string, img *host.Image) {
	o := m.opts.Upgrade
	// Reloads whose workers all serve and whose old ones only drain are
	// done as far as their callers are concerned; the drain carries over.
	if r := m.rollout; r != nil {
		m.supersede(r)
	}
	for _, r := range append([]*rollout(nil), m.finishing...) {
		r.old = nil
		m.finish(r)
	}
	// The answers go out first: the exec ends the connections they travel
	// on. Each caller says when its answer has left (a second at most).
	acked := make(chan struct{}, len(m.upgrade.waiters))
	failed := make(chan struct{})
	for _, w := range m.upgrade.waiters {
		w <- UpgradeResult{From: m.opts.Version, To: to, Sent: func() { acked <- struct{}{} }, Failed: failed}
	}
	deadline := time.After(time.Second)
	for range m.upgrade.waiters {
		select {
		case <-acked:
		case <-deadline:
		}
	}
	m.upgrade.waiters = nil
	m.feedServiceWatchdog()
	m.log.Info().Str("event", "upgrading").Str("from", m.opts.Version).Str("to", to).Msg("upgrading in place")
	m.env.tellService(host.ServiceState{Reloading: true, Status: "upgrading baton in place: " + to})
	// From here on a request is kept for the new image instead of waiting
	// for this loop, and signals already caught are passed on as such.
	m.closeDoor()
	var undo func()
	if o.Quiesce != nil {
		undo = o.Quiesce()
	}
	fail := func(err error) {
		close(failed)
		m.openDoor()
		if undo != nil {
			undo()
		}
		m.log.Error().Str("event", "upgrade_failed").Err(err).Msg("in-place upgrade failed: this master carries on")
		m.env.tellService(host.ServiceState{Ready: true, Status: m.servingStatus()})
		m.applyPending()
		m.runQueued()
	}
	gens := map[int]int{}
	for pid, w := range m.workers {
		gens[pid] = w.gen.n
	}
	for pid, s := range m.strays {
		gens[pid] = s.key.gen
	}
	hs, keep, err := m.env.handOver(gens)
	if err != nil {
		fail(err)
		return
	}
	var files map[string]int
	var data json.RawMessage
	if o.Carry != nil {
		if files, data, err = o.Carry(); err != nil {
			m.env.takeBack()
			fail(err)
			return
		}
	}
	for _, fd := range files {
		keep = append(keep, fd)
	}
	ho, err := m.handOverState(hs, files, data)
	var state []byte
	if err == nil {
		state, err = json.Marshal(ho)
	}
	if err != nil {
		m.env.takeBack()
		fail(err)
		return
	}
	if q := m.queued; q != nil {
		// Handed over: it runs in the new image, after this answer.
		for _, w := range q.waiters {
			w <- Result{Generation: m.currentGen(), Trigger: q.trigger, Err: errors.New("baton upgraded itself in place first: the reload runs in the new image (see baton status)")}
		}
		q.waiters = nil
	}
	if o.BeforeExec != nil {
		o.BeforeExec()
	}
	// A stop asked for since the state was written down would be lost
	// with this image: the exec is called off, and this image stops.
	reload, stop := m.pending.take()
	m.pending.putBack(reload, stop)
	if stop > ho.Engine.Pending.Stop {
		m.env.takeBack()
		fail(errors.New("called off: a stop was asked for during the hand-over"))
		return
	}
	err = m.env.exec(img, o.Args, o.Env, keep, state)
	// Here only if the exec failed.
	m.env.takeBack()
	fail(err)
}

// TakeHandOver reads, in a master's new image, the state its old image
// handed over, and removes the variable that named it. It returns nil
// when this process was not started by an in-place upgrade, and an error
// when the state cannot be read or is of a version this build does not
// know.
func TakeHandOver() (*HandOver, error) {
	b, err := host.TakeState()
	if b == nil || err != nil {
		return nil, err
	}
	return ReadHandOver(b)
}

// ReadHandOver decodes a HandOver and checks its version.
func ReadHandOver(raw []byte) (*HandOver, error) {
	var probe struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("reading the handed-over state: %w", err)
	}
	if probe.Version < OldestStateVersion || probe.Version > StateVersion {
		return nil, fmt.Errorf("the handed-over state is of version %d; this build reads versions %d to %d", probe.Version, OldestStateVersion, StateVersion)
	}
	var ho HandOver
	if err := json.Unmarshal(raw, &ho); err != nil {
		return nil, fmt.Errorf("reading the handed-over state: %w", err)
	}
	return &ho, nil
}

// closeDoor makes requests sent from now on pending instead of waiting
// for the loop, which is handing over; openDoor undoes it.
func (m *Master) closeDoor() { close(*m.door.Load()) }

func (m *Master) openDoor() {
	c := make(chan struct{})
	m.door.Store(&c)
}

// File is the descriptor the caller handed over as name; false when ho is
// nil or has none.
func (ho *HandOver) File(name string) (int, bool) {
	if ho == nil {
		return 0, false
	}
	fd, ok := ho.Files[name]
	return fd, ok
}
