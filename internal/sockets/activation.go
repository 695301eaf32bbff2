package sockets

import (
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/baton-sh/baton/internal/activation"
)

// Activation is the set of sockets a service manager passed to this
// process (systemd socket activation, or systemd-socket-activate): they
// were bound before baton started and outlive it, so even a restart of
// baton itself refuses no connection.
type Activation struct {
	sockets []*Socket
}

// Activated collects the sockets passed to this process with LISTEN_FDS
// (only when LISTEN_PID is this process), naming each by LISTEN_FDNAMES and
// reading the address each is bound to.
func Activated() (*Activation, error) {
	files, err := activation.Files()
	if err != nil {
		return nil, err
	}
	a := &Activation{}
	for i, f := range files {
		s, err := adopt(f.Name, f.File)
		if err != nil {
			for _, f := range files[i:] {
				f.File.Close()
			}
			a.Close()
			return nil, err
		}
		a.sockets = append(a.sockets, s)
	}
	return a, nil
}

// Close closes every socket no spec has taken.
func (a *Activation) Close() {
	for _, s := range a.sockets {
		s.Close()
	}
	a.sockets = nil
}

func adopt(name string, f *os.File) (*Socket, error) {
	typ, err := syscall.GetsockoptInt(int(f.Fd()), syscall.SOL_SOCKET, syscall.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("activated socket %q (fd %d) is not a socket: %w", name, f.Fd(), err)
	}
	var addr net.Addr
	if typ == syscall.SOCK_DGRAM {
		c, err := net.FilePacketConn(f)
		if err != nil {
			return nil, fmt.Errorf("activated socket %q: %w", name, err)
		}
		addr = c.LocalAddr()
		c.Close()
	} else {
		l, err := net.FileListener(f)
		if err != nil {
			return nil, fmt.Errorf("activated socket %q: %w", name, err)
		}
		addr = l.Addr()
		if ul, ok := l.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false) // the service manager owns the file
		}
		l.Close()
	}
	if f, err = holdable(f); err != nil {
		return nil, fmt.Errorf("activated socket %q: %w", name, err)
	}
	return &Socket{Spec: Spec{Name: name, Network: addr.Network(), Address: addr.String()}, File: f, Addr: addr, Activated: true}, nil
}

// Take removes and returns the activated socket for spec: the one named
// spec.Name; among several of that name (systemd names every socket of a
// .socket unit after the unit unless FileDescriptorName= is set), the one
// bound to spec's address; with none of that name, the one bound to spec's
// address (never for port 0). It returns nil when none matches; the caller
// then binds spec itself.
func (a *Activation) Take(spec Spec) *Socket {
	var named []int
	for i, s := range a.sockets {
		if s.Spec.Name == spec.Name {
			named = append(named, i)
		}
	}
	pick := -1
	if len(named) == 1 {
		pick = named[0]
	} else {
		for i, s := range a.sockets {
			if (len(named) == 0 || s.Spec.Name == spec.Name) && sameAddress(spec, s.Addr) {
				pick = i
				break
			}
		}
	}
	if pick < 0 {
		return nil
	}
	s := a.sockets[pick]
	a.sockets = append(a.sockets[:pick], a.sockets[pick+1:]...)
	s.Spec.Name, s.Spec.Mode = spec.Name, spec.Mode
	return s
}

// Rest returns the activated sockets no spec has taken.
func (a *Activation) Rest() []*Socket { return a.sockets }

func sameAddress(spec Spec, addr net.Addr) bool {
	switch got := addr.(type) {
	case *net.TCPAddr:
		want, err := net.ResolveTCPAddr(spec.Network, spec.Address)
		return err == nil && !spec.IsPacket() && want.Port != 0 && want.Port == got.Port && want.IP.Equal(got.IP)
	case *net.UDPAddr:
		want, err := net.ResolveUDPAddr(spec.Network, spec.Address)
		return err == nil && spec.IsPacket() && want.Port != 0 && want.Port == got.Port && want.IP.Equal(got.IP)
	case *net.UnixAddr:
		return spec.Network == "unix" && spec.Address == got.Name
	}
	return false
}
