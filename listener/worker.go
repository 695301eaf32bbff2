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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/baton-sh/baton/internal/activation"
	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/notify"
)

var passed struct {
	sync.Mutex
	read  bool
	names []string          // every socket passed, by name, handed out or not
	files []activation.File // not handed out yet
	err   error
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
// means: the only one called name; among several called name (systemd
// names every socket of a .socket unit after the unit), the one bound to
// address; with none called name, the one bound to address. It returns nil
// when none fits.
func take(name, network, address string) (*os.File, error) {
	passed.Lock()
	defer passed.Unlock()
	if !passed.read {
		passed.read = true
		passed.files, passed.err = activation.Files()
		for _, f := range passed.files {
			passed.names = append(passed.names, f.Name)
		}
	}
	if passed.err != nil {
		return nil, passed.err
	}
	var named []int
	for i, f := range passed.files {
		if f.Name == name {
			named = append(named, i)
		}
	}
	pick := -1
	switch {
	case len(named) == 1:
		pick = named[0]
	case len(named) > 1:
		for _, i := range named {
			if boundTo(passed.files[i].File, network, address) {
				pick = i
				break
			}
		}
	default:
		for i, f := range passed.files {
			if boundTo(f.File, network, address) {
				pick = i
				break
			}
		}
	}
	if pick < 0 {
		if len(passed.names) > 0 {
			return nil, &errNoMatch{name, address, passed.names}
		}
		return nil, nil
	}
	f := passed.files[pick].File
	passed.files = append(passed.files[:pick], passed.files[pick+1:]...)
	return f, nil
}

// boundTo reports whether f is a socket bound to address (a port of 0
// never matches). It reads the address without f.Fd, which would switch
// a socket shared with other generations to blocking mode.
func boundTo(f *os.File, network, address string) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var sa syscall.Sockaddr
	rc.Control(func(fd uintptr) { sa, _ = syscall.Getsockname(int(fd)) })
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return sameIPPort(network, address, sa.Addr[:], sa.Port)
	case *syscall.SockaddrInet6:
		return sameIPPort(network, address, sa.Addr[:], sa.Port)
	case *syscall.SockaddrUnix:
		return (network == "unix" || network == "unixgram" || network == "unixpacket") && sa.Name == address
	}
	return false
}

func sameIPPort(network, address string, ip net.IP, port int) bool {
	var want *net.TCPAddr
	switch network {
	case "tcp", "tcp4", "tcp6":
		a, err := net.ResolveTCPAddr(network, address)
		if err != nil {
			return false
		}
		want = a
	case "udp", "udp4", "udp6":
		a, err := net.ResolveUDPAddr(network, address)
		if err != nil {
			return false
		}
		want = &net.TCPAddr{IP: a.IP, Port: a.Port}
	default:
		return false
	}
	if want.Port == 0 || want.Port != port {
		return false
	}
	if want.IP == nil {
		want.IP = net.IPv6unspecified
	}
	return want.IP.Equal(ip) || (want.IP.IsUnspecified() && ip.IsUnspecified())
}

// Listen returns the passed stream socket called name (see take for how
// repeated names are told apart). When nothing was passed (the program was
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
