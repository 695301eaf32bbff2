//go:build linux

package host

import (
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/sockets"
)

// Protocol is how the sockets and the readiness signal pass between the
// master and a worker.
type Protocol int

const (
	// ProtocolSystemd is systemd's socket activation and sd_notify: the
	// sockets are fds 3, 4, … with LISTEN_FDS, LISTEN_FDNAMES and
	// LISTEN_PID; READY=1 arrives on NOTIFY_SOCKET.
	ProtocolSystemd Protocol = iota
	// ProtocolTableflip is the parent side of github.com/cloudflare/tableflip
	// (v1.2), so that an unmodified tableflip app is a worker: its
	// Upgrader.Listen gets the master's sockets and its Upgrader.Ready is the
	// readiness signal. See tableflip.
	ProtocolTableflip
	// ProtocolEndless is the parent side of github.com/fvbock/endless: an
	// unmodified endless app is a worker. See endless.
	ProtocolEndless
	// ProtocolGrace is the parent side of github.com/facebookgo/grace: an
	// unmodified gracehttp app is a worker. See grace.
	ProtocolGrace
)

var protocolNames = [...]string{"systemd", "tableflip", "endless", "grace"}

func (p Protocol) String() string { return protocolNames[p] }

// protocol prepares each generation's start: what it gets beyond stdio,
// and any channel of its own on which it says it is ready. Every protocol
// also gets the master's NOTIFY_SOCKET, so READY=1 and STATUS= work
// whatever the protocol.
type protocol interface {
	// handoff returns what generation n is started with.
	handoff(s Start, socks []*sockets.Socket, notifySocket string) (*handoff, error)
}

// handoff is one generation's start, made by a protocol.
type handoff struct {
	// files are the descriptors from fd 3 on, and env the environment.
	files []*os.File
	env   []string
	// started, if set, is called once the worker's PID is known, or with
	// pid 0 when it could not be started. A protocol that learns
	// readiness on a channel of its own calls ready(pid) from any
	// goroutine.
	started func(pid int, ready func(pid int))
	// release, if set, is called once the generation has taken over (its
	// predecessor is gone) and again when it has exited.
	release func()
	// stub starts the parent stub (protocol_stub.go) as the main process.
	stub bool
	// signal, if set, is how a signal reaches the main process (not its
	// group); done, if set, is called once the main process is reaped.
	signal func(sig syscall.Signal) error
	done   func()
}

// newProtocol returns protocol p. Each handoff builds on the
// environment of the release it starts (Start.Release.Env).
func newProtocol(p Protocol, drain syscall.Signal) protocol {
	switch p {
	case ProtocolTableflip:
		return tableflip{}
	case ProtocolEndless:
		return endless{drain: drain}
	case ProtocolGrace:
		return grace{drain: drain}
	}
	return systemd{}
}

// systemd passes the sockets the way systemd socket activation does.
type systemd struct{}

func (p systemd) handoff(s Start, socks []*sockets.Socket, notifySocket string) (*handoff, error) {
	h := &handoff{env: withWorker(sockets.WorkerEnv(s.Release.Env, socks, notifySocket), s)}
	for _, sock := range socks {
		h.files = append(h.files, sock.File)
	}
	return h, nil
}

// withWorker sets the worker's own variables in env, replacing any
// inherited: BATON_GENERATION, BATON_WORKER_INDEX, BATON_WORKERS,
// BATON_MASTER_PID (which the keeper looks for in what a worker left once
// the master is gone), and WATCHDOG_USEC (with --watchdog; WATCHDOG_PID is
// the exec shim's).
func withWorker(env []string, s Start) []string {
	out := env[:0:0]
	for _, kv := range env {
		switch name, _, _ := strings.Cut(kv, "="); name {
		case envGeneration, envWorkerIndex, envWorkers, envMasterPID, "WATCHDOG_USEC", "WATCHDOG_PID":
		default:
			out = append(out, kv)
		}
	}
	out = append(out,
		envGeneration+"="+strconv.Itoa(s.Generation),
		envWorkerIndex+"="+strconv.Itoa(s.Index),
		envWorkers+"="+strconv.Itoa(s.Workers),
		envMasterPID+"="+strconv.Itoa(os.Getpid()))
	if s.Watchdog > 0 {
		out = append(out, "WATCHDOG_USEC="+strconv.FormatInt(s.Watchdog.Microseconds(), 10))
	}
	return out
}

// The variables baton sets for workers and hooks, which the Host also
// reads back from adopted processes.
const (
	envGeneration  = envnames.Generation
	envWorkerIndex = envnames.WorkerIndex
	envWorkers     = envnames.Workers
	envHook        = envnames.Hook
	envMasterPID   = envnames.MasterPID
)
