package sockets

import (
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Carried is a held socket as the master hands it to its own new image
// across an in-place upgrade (exec): the descriptor number stays the same,
// and this says what it is.
type Carried struct {
	Name      string `json:"name"`
	FD        int    `json:"fd"`
	Addr      string `json:"addr"`
	Network   string `json:"network"`
	Activated bool   `json:"activated,omitempty"`
	// Unlink is the unix socket file this master created, with its device
	// and inode, so that the new image removes it at exit only if it is
	// still that file.
	Unlink string `json:"unlink,omitempty"`
	Dev    uint64 `json:"dev,omitempty"`
	Ino    uint64 `json:"ino,omitempty"`
}

// Carry describes s for the new image.
func (s *Socket) Carry() Carried {
	c := Carried{Name: s.Spec.Name, FD: int(s.File.Fd()), Addr: s.Addr.String(), Network: s.Addr.Network(),
		Activated: s.Activated, Unlink: s.unlinkPath}
	if s.created != nil {
		if st, ok := s.created.Sys().(*syscall.Stat_t); ok {
			c.Dev, c.Ino = uint64(st.Dev), st.Ino
		}
	}
	return c
}

// Dup duplicates c's descriptor, close-on-exec, for an exec to keep open.
// c is left as it was. net's File would not do: the duplicate's Fd makes
// it blocking, and with it c, since both share one open file; a read in
// progress on c then holds c's Close up, should the exec not happen.
func Dup(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if cerr := rc.Control(func(orig uintptr) {
		fd, err = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0)
	}); cerr != nil {
		return -1, cerr
	}
	return fd, err
}

// Adopt takes back, in the new image, the socket c describes for spec,
// checking that descriptor c.FD is still a socket bound to that address.
func Adopt(spec Spec, c Carried) (*Socket, error) {
	f := os.NewFile(uintptr(c.FD), spec.Name)
	sa, err := syscall.Getsockname(c.FD)
	if err != nil {
		return nil, fmt.Errorf("socket %s handed over as fd %d: %w", spec.Name, c.FD, err)
	}
	var addr net.Addr
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		ip := net.IP(a.Addr[:])
		if spec.IsPacket() {
			addr = &net.UDPAddr{IP: ip, Port: a.Port}
		} else {
			addr = &net.TCPAddr{IP: ip, Port: a.Port}
		}
	case *syscall.SockaddrInet6:
		ip := net.IP(a.Addr[:])
		if spec.IsPacket() {
			addr = &net.UDPAddr{IP: ip, Port: a.Port}
		} else {
			addr = &net.TCPAddr{IP: ip, Port: a.Port}
		}
	case *syscall.SockaddrUnix:
		addr = &net.UnixAddr{Name: a.Name, Net: "unix"}
	default:
		return nil, fmt.Errorf("socket %s handed over as fd %d: not an internet or unix socket", spec.Name, c.FD)
	}
	if addr.String() != c.Addr {
		return nil, fmt.Errorf("socket %s handed over as fd %d is bound to %s, not %s", spec.Name, c.FD, addr, c.Addr)
	}
	syscall.CloseOnExec(c.FD)
	s := &Socket{Spec: spec, File: f, Addr: addr, Activated: c.Activated, unlinkPath: c.Unlink}
	if c.Unlink != "" {
		if fi, err := os.Lstat(c.Unlink); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && uint64(st.Dev) == c.Dev && st.Ino == c.Ino {
				s.created = fi
			}
		}
		// Gone or replaced while the master changed image: lost, as
		// FileIntact would have found it.
		s.fileLost = s.created == nil && c.Ino != 0
	}
	return s, nil
}
