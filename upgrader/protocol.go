package upgrader

import (
	"fmt"
	"os"
	"strconv"
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

// ParseProtocol reads a --protocol value.
func ParseProtocol(s string) (Protocol, error) {
	for p, name := range protocolNames {
		if s == name {
			return Protocol(p), nil
		}
	}
	return 0, fmt.Errorf("unknown protocol %q: want systemd, tableflip, endless or grace", s)
}

// protocol prepares each generation's start: what it gets beyond stdio,
// and any channel of its own on which it says it is ready. Every protocol
// also gets the master's NOTIFY_SOCKET, so READY=1 and STATUS= work
// whatever the protocol.
type protocol interface {
	// handoff returns what generation n is started with.
	handoff(n int, socks []*sockets.Socket, notifySocket string) (*handoff, error)
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

func newProtocol(p Protocol, base []string, drain syscall.Signal) protocol {
	switch p {
	case ProtocolTableflip:
		return tableflip{base: base}
	case ProtocolEndless:
		return endless{base: base, drain: drain}
	case ProtocolGrace:
		return grace{base: base, drain: drain}
	}
	return systemd{base: base}
}

// systemd passes the sockets the way systemd socket activation does.
type systemd struct{ base []string }

func (s systemd) handoff(n int, socks []*sockets.Socket, notifySocket string) (*handoff, error) {
	h := &handoff{env: withGeneration(sockets.WorkerEnv(s.base, socks, notifySocket), n)}
	for _, s := range socks {
		h.files = append(h.files, s.File)
	}
	return h, nil
}

// withGeneration sets BATON_GENERATION in env, replacing one inherited.
func withGeneration(env []string, n int) []string {
	out := env[:0]
	for _, kv := range env {
		if len(kv) <= len(EnvGeneration) || kv[:len(EnvGeneration)+1] != EnvGeneration+"=" {
			out = append(out, kv)
		}
	}
	return append(out, EnvGeneration+"="+strconv.Itoa(n))
}

// EnvGeneration tells a worker which generation it is (1, 2, …).
const EnvGeneration = envnames.Generation
