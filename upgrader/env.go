package upgrader

import (
	"syscall"
	"time"

	"github.com/baton-sh/baton/internal/host"
)

// env is everything the loop does to the world outside its own state: the
// seam between the lifecycle (this package) and the operating system
// (internal/host). Methods are called from the loop only and never block
// on it; what they learn later reaches the loop as events. sim_test.go
// drives the loop through a fake.
type env interface {
	now() time.Time
	// monotonic is the time on a clock nobody sets (CLOCK_MONOTONIC),
	// the same for both images of an in-place upgrade: what time left
	// across the exec is measured with, so that a wall clock stepped
	// meanwhile fires no handed-over timer early or late.
	monotonic() time.Duration
	// after delivers e to the loop once d has passed, unless the returned
	// function is called first.
	after(d time.Duration, e event) (cancel func())

	// resolve finds the worker program and directory as they are on disk
	// now: the release a new generation runs.
	resolve() (host.Release, error)
	// start starts a worker in its own process group.
	start(s host.Start) (pid int, err error)
	// signal sends sig to process pid (a worker's main process or a
	// stray) through the pidfd held for it, and with group to the process
	// group a worker leads as well. A process that is gone is no error.
	signal(pid int, sig syscall.Signal, group bool) error
	// mainExited: worker pid's main process has been reaped. The env stops
	// watching its readiness and ends what its protocol held. It returns
	// the processes left in its process group. With keep, it watches them
	// (a groupEmpty event follows once none is left); without, it kills
	// them.
	mainExited(pid int, keep bool) (left []string)
	// forget: worker or stray pid is gone for good; its pidfd is closed
	// and the keeper told.
	forget(pid int)
	// tookOver: worker pid serves and what it replaced has been told to go
	// (tableflip's parent-exit signal).
	tookOver(pid int)
	// settled: worker pid no longer starts; stop looking for its readiness.
	settled(pid int)
	// accepting reports a process of worker pid seen waiting for
	// connections on a passed socket, and how; 0 if none.
	accepting(pid int) (int, string)
	// adopted lists the processes the master adopted since it last asked
	// that are neither workers nor the env's own (hooks, the keeper).
	adopted() []host.Stray
	// checkSockets binds anew every held socket nothing can reach any
	// more (host.CheckSockets) and lists them.
	checkSockets() []host.LostSocket
	// hook runs a lifecycle hook beside the loop; a hookDone event reports
	// its end.
	hook(h host.Hook)
	// stopping: a stop began; fast kills the running hook.
	stopping(fast bool)
	// memory is the resident memory of worker pid's process tree, bytes.
	memory(pid int) (int64, error)
	// probe asks url once, beside the loop; a probeDone event answers.
	probe(url string)
	// checkUpgrade opens an in-place upgrade's new binary (host.Image)
	// and runs its check beside the loop (host.CheckRun); an
	// upgradeChecked event reports it, with the image to execute.
	checkUpgrade(path string, args, env []string, state []byte, timeout time.Duration)
	// handOver readies the env for the exec (host.HandOver); takeBack
	// undoes it after an exec that failed.
	handOver(gens map[int]int) (host.State, []int, error)
	takeBack()
	// exec executes img, the binary checked, handing it state. It returns
	// only if that failed.
	exec(img *host.Image, args, env []string, keep []int, state []byte) error
	// tellService tells the master's own service manager where it is.
	tellService(st host.ServiceState)
}
