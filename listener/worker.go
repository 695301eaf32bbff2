// Package listener is the worker side of baton for Go servers: take the
// sockets baton (or systemd) passed by name, say when the server is ready,
// and drain without losing a request when told to stop.
//
//	l, err := listener.Listen("http", "tcp", "127.0.0.1:8080")
//	…
//	err = listener.ServeHTTP(srv, l) // READY=1, then drain on SIGTERM
//
// The same program runs without baton: Listen binds the address itself when
// nothing was passed, and Ready, Stopping and Status do nothing when no
// NOTIFY_SOCKET is set. Importing the package does nothing; the passed
// descriptors are read on the first call to Listen or ListenPacket.
package listener

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/baton-sh/baton/internal/activation"
	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/notify"
)

var passed struct {
	sync.Mutex
	read    bool
	names   []string            // every socket passed, by name, handed out or not
	files   []*os.File          // not handed out yet
	sockets []activation.Socket // what each of files is bound to
	err     error
}

// errNoMatch says that sockets were passed but none is the one asked for:
// binding the address instead would leave the passed socket unserved
// while the server listens somewhere no client connects.
type errNoMatch struct {
	name, address string
	passed        []string
}

func (e *errNoMatch) Error() string {
	return fmt.Sprintf("listener: no socket passed to this process is named %q or bound to %s (passed: %s): name the socket %s in baton's --listen (%s=SCHEME://…) or ask for one of those names",
		e.name, e.address, strings.Join(e.passed, ", "), e.name, e.name)
}

// take hands out the passed socket that Listen(name, network, address)
// means, chosen as the master chooses one for a --listen spec (see
// activation.Choose). It returns nil when nothing was passed.
func take(name, network, address string) (*os.File, error) {
	passed.Lock()
	defer passed.Unlock()
	if !passed.read {
		passed.read = true
		var files []activation.File
		files, passed.err = activation.Files()
		for _, f := range files {
			// A descriptor that is no socket can still be asked for by
			// name; net.FileListener then says what it is.
			s, _ := activation.Describe(f.Name, f.File)
			passed.names = append(passed.names, f.Name)
			passed.files = append(passed.files, f.File)
			passed.sockets = append(passed.sockets, s)
		}
	}
	if passed.err != nil {
		return nil, passed.err
	}
	pick := activation.Choose(passed.sockets, name, network, address)
	if pick < 0 {
		if len(passed.names) > 0 {
			return nil, &errNoMatch{name, address, passed.names}
		}
		return nil, nil
	}
	f := passed.files[pick]
	passed.files = slices.Delete(passed.files, pick, pick+1)
	passed.sockets = slices.Delete(passed.sockets, pick, pick+1)
	return f, nil
}

// Listen returns the passed stream socket called name. When several are
// called name (systemd names every socket of a .socket unit after the
// unit), or none is, it returns the one bound to address, by the rule
// baton's master uses for --listen: a wildcard host is the same address
// as a wildcard socket that takes an IP family in common (":8080" is the
// [::]:8080 socket systemd binds for ListenStream=8080), and port 0 never
// matches an address. When nothing was passed (the program was
// started by hand, say with go run) it binds network/address itself, so
// the same binary works with and without baton. When sockets were passed
// but none is called name or bound to address, it is an error naming the
// sockets that were passed. It is safe to call from several
// goroutines; each passed socket is handed out once.
func Listen(name, network, address string) (net.Listener, error) {
	f, err := take(name, network, address)
	if err != nil {
		return nil, err
	}
	if f == nil {
		return net.Listen(network, address)
	}
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("passed socket %q: %w", name, err)
	}
	return l, nil
}

// ListenPacket is Listen for datagram sockets (udp, unixgram).
func ListenPacket(name, network, address string) (net.PacketConn, error) {
	f, err := take(name, network, address)
	if err != nil {
		return nil, err
	}
	if f == nil {
		return net.ListenPacket(network, address)
	}
	defer f.Close()
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("passed socket %q: %w", name, err)
	}
	return c, nil
}

// Ready tells baton (or systemd) that this process serves: baton then
// drains the previous generation. It does nothing when NOTIFY_SOCKET is not
// set, so it is safe to call unconditionally. The message is never sent
// blocking; while the manager's queue is full (a flood of other messages,
// or a manager busy for a moment), it is tried again for up to
// ReadyPatience before Ready gives up.
func Ready() error {
	delay := time.Millisecond
	deadline := time.Now().Add(ReadyPatience)
	for {
		err := notify.Send("READY=1")
		if !errors.Is(err, notify.ErrQueueFull) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(delay)
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// ReadyPatience bounds how long Ready keeps trying a manager whose queue
// is full.
const ReadyPatience = 10 * time.Second

// Stopping tells baton that this process no longer accepts connections.
func Stopping() error { return notify.Send("STOPPING=1") }

// Status sets a free-form status line that baton logs and shows in
// `baton status`.
func Status(s string) error { return notify.Send("STATUS=" + s) }

// Generation is this worker's generation under baton (1 for the first,
// and one more at each reload), or 0 when not run by baton.
func Generation() int {
	n, _ := strconv.Atoi(os.Getenv(envnames.Generation))
	return n
}
