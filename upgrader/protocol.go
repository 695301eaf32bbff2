package upgrader

import (
	"fmt"
	"syscall"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/host"
)

// Protocol is how the sockets and the readiness signal pass between the
// master and a worker.
type Protocol = host.Protocol

const (
	// ProtocolSystemd is systemd's socket activation and sd_notify: the
	// sockets are fds 3, 4, … with LISTEN_FDS, LISTEN_FDNAMES and
	// LISTEN_PID; READY=1 arrives on NOTIFY_SOCKET.
	ProtocolSystemd = host.ProtocolSystemd
	// ProtocolTableflip is the parent side of github.com/cloudflare/tableflip
	// (v1.2), so that an unmodified tableflip app is a worker.
	ProtocolTableflip = host.ProtocolTableflip
	// ProtocolEndless is the parent side of github.com/fvbock/endless.
	ProtocolEndless = host.ProtocolEndless
	// ProtocolGrace is the parent side of github.com/facebookgo/grace.
	ProtocolGrace = host.ProtocolGrace
)

// ParseProtocol reads a --protocol value.
func ParseProtocol(s string) (Protocol, error) {
	for _, p := range []Protocol{ProtocolSystemd, ProtocolTableflip, ProtocolEndless, ProtocolGrace} {
		if s == p.String() {
			return p, nil
		}
	}
	return 0, fmt.Errorf("unknown protocol %q: want systemd, tableflip, endless or grace", s)
}

// ParseSignal accepts TERM, SIGTERM, term or 15.
func ParseSignal(s string) (syscall.Signal, error) { return host.ParseSignal(s) }

// EnvGeneration tells a worker which generation it is (1, 2, …).
const EnvGeneration = envnames.Generation
