package sockets

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/fdlimit"
)

// Socket is a socket the master binds once and holds until it exits. The
// kernel keeps queueing connections on it while workers come and go, which
// is what makes a handoff lose nothing.
type Socket struct {
	Spec Spec
	// File is a descriptor of the socket, blocking when bound, the form
	// systemd passes and every socket-activation client expects. Its Fd
	// never changes the socket's flags (see holdable), so passing it to
	// workers keeps whatever mode they set.
	File *os.File
	// Addr is the address actually bound (port 0 resolved).
	Addr net.Addr
	// Activated is set when a service manager bound the socket and passed
	// it to this process (see Activated); Close then leaves its file alone.
	Activated bool

	unlinkPath string      // unix socket file this process created
	created    os.FileInfo // to recognise that file at exit
	// fileLost is set when the file was found gone or replaced at an
	// adoption, where created stays unknown.
	fileLost bool
}

// Bind creates the socket described by spec. A stale unix socket file (one
// nobody accepts on) is replaced; a live one is an error.
func Bind(spec Spec) (*Socket, error) {
	if spec.Network == "unix" {
		if err := removeStaleUnix(spec.Address); err != nil {
			return nil, fmt.Errorf("bind %s: %w", spec, err)
		}
	}
	var (
		f    *os.File
		addr net.Addr
		err  error
	)
	if spec.IsPacket() {
		var c net.PacketConn
		if c, err = net.ListenPacket(spec.bindNetwork(), spec.Address); err == nil {
			addr = c.LocalAddr()
			f, err = c.(*net.UDPConn).File()
			c.Close()
		}
	} else {
		var l net.Listener
		if l, err = net.Listen(spec.bindNetwork(), spec.Address); err == nil {
			addr = l.Addr()
			if ul, ok := l.(*net.UnixListener); ok {
				// The file must outlive this Go listener: it belongs to
				// the socket the master keeps.
				ul.SetUnlinkOnClose(false)
			}
			f, err = l.(interface{ File() (*os.File, error) }).File()
			l.Close()
		}
	}
	if err != nil {
		return nil, bindError(spec, err)
	}
	if f, err = holdable(f); err != nil {
		return nil, fmt.Errorf("bind %s: %w", spec, err)
	}
	s := &Socket{Spec: spec, File: f, Addr: addr}
	if spec.Network == "unix" {
		if spec.Mode != 0 {
			if err := os.Chmod(spec.Address, spec.Mode); err != nil {
				s.File.Close()
				os.Remove(spec.Address)
				return nil, fmt.Errorf("bind %s: %w", spec, err)
			}
		}
		s.unlinkPath = spec.Address
		s.created, _ = os.Lstat(spec.Address)
	}
	return s, nil
}

// bindNetwork is the network Bind asks Go for, so that each address binds
// what systemd's ListenStream= and ListenDatagram= bind for it: 0.0.0.0
// is IPv4 only, while [::] and an empty host are every IPv4 and IPv6
// address (dual-stack, unless net.ipv6.bindv6only is set). Go alone would
// make "tcp" on 0.0.0.0 dual-stack too, and a server looking for its
// activated socket by address (puma's -b tcp://0.0.0.0:P) would then not
// find it.
func (s Spec) bindNetwork() string {
	host, _, err := net.SplitHostPort(s.Address)
	if err != nil || (s.Network != "tcp" && s.Network != "udp") {
		return s.Network
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil && ip.IsUnspecified() {
		return s.Network + "4"
	}
	return s.Network
}

// holdable returns the socket behind f as a blocking descriptor whose
// flags the master's later f.Fd calls leave alone, and closes f.
//
// O_NONBLOCK belongs to the open file description, which the master and
// every generation share. A Go worker sets it; os.File.Fd on a file that
// came from a Go listener (or that Go polls) clears it again, on every
// call. Had the master called that Fd to start each generation, an old Go
// worker's next accept(2) would block in the kernel, where closing its
// listener cannot reach it: its drain would hang until some connection
// happened to arrive. A file made by os.NewFile from a blocking descriptor
// is neither polled by the master nor switched by Fd, so the socket starts
// blocking, as systemd passes it, and only workers change that.
func holdable(f *os.File) (*os.File, error) {
	defer f.Close()
	fd, err := dupCloseOnExec(f)
	if err != nil {
		return nil, err
	}
	if err := syscall.SetNonblock(fd, false); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// dupCloseOnExec duplicates f's descriptor without going through f.Fd.
func dupCloseOnExec(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, dupErr := -1, error(nil)
	if err := rc.Control(func(s uintptr) {
		fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	return fd, dupErr
}

func bindError(spec Spec, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("bind %s: address already in use: stop the process that holds it or choose another address", spec)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("bind %s: permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE", spec)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("bind %s: address not available on this machine", spec)
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		// The call that failed (socket, accept4, fcntl) says nothing to a user.
		var errno syscall.Errno
		errors.As(err, &errno)
		return fmt.Errorf("bind %s: %w", spec, fdlimit.Explain(errno))
	}
	return fmt.Errorf("bind %s: %w", spec, err)
}

// removeStaleUnix deletes a socket file left behind by a process that died
// without cleaning up, and refuses to touch a live one or a non-socket.
func removeStaleUnix(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket: remove it or choose another path", path)
	}
	c, err := net.Dial("unix", path)
	switch {
	case err == nil:
		c.Close()
		return fmt.Errorf("%s is in use by a running server: stop it or choose another path", path)
	case errors.Is(err, syscall.EAGAIN):
		// A server listens there, its accept queue full.
		return fmt.Errorf("%s is in use by a running server (its queue is full): stop it or choose another path", path)
	case !errors.Is(err, syscall.ECONNREFUSED):
		// Only a refused connection shows that nobody is bound to the
		// file; EACCES or EPROTOTYPE (a live datagram socket) do not.
		return fmt.Errorf("%s exists and cannot be checked for a running server (%v): remove it or choose another path", path, errors.Unwrap(err))
	}
	return os.Remove(path)
}

// Close closes the master's descriptor. A unix socket file is removed only
// if it is still the one Bind created, so a file another process has put in
// its place since is left alone.
func (s *Socket) Close() error {
	var err error
	// Compare while the descriptor still pins the socket's inode: once it
	// is closed, a new file at the path may get the same inode number.
	if s.unlinkPath != "" && s.created != nil {
		if fi, statErr := os.Lstat(s.unlinkPath); statErr == nil && os.SameFile(fi, s.created) {
			err = os.Remove(s.unlinkPath)
		}
	}
	if closeErr := s.File.Close(); closeErr != nil {
		err = closeErr
	}
	return err
}

// Listening reports whether a stream socket still listens. A worker can
// stop it for every generation at once: shutdown(2) on its inherited copy
// acts on the one socket they all share. Datagram sockets always count as
// listening.
func (s *Socket) Listening() bool {
	if s.Spec.IsPacket() {
		return true
	}
	on, err := syscall.GetsockoptInt(int(s.File.Fd()), syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	return err != nil || on == 1
}

// FileIntact reports whether the unix socket file this process created is
// still in place at its path. Deleted (a temporary-file cleaner, a deploy
// that removed its directory) or replaced by another file, it leaves the
// socket listening but unreachable: nothing can connect by the path any
// more. A socket with no file of this process's (not a unix socket, an
// abstract one, one a service manager passed) counts as intact. It costs
// one lstat.
func (s *Socket) FileIntact() bool {
	if s.fileLost {
		return false
	}
	if s.unlinkPath == "" || s.created == nil {
		return true
	}
	fi, err := os.Lstat(s.unlinkPath)
	if err != nil {
		return !errors.Is(err, fs.ErrNotExist)
	}
	return os.SameFile(fi, s.created)
}

// HasFile reports whether s is a unix socket whose file this process
// created: the only kind whose loss (see FileIntact) no worker's exit or
// message reveals, so the master must look for it.
func (s *Socket) HasFile() bool { return s.unlinkPath != "" }

// Rebind puts a freshly bound socket on s's address in s's place and
// closes the master's descriptor of the old one, which no longer listens
// or, for a unix socket, lost its file. Workers still holding the old one
// keep it bound; SO_REUSEADDR, set on both, lets the new one bind beside a
// socket that does not listen. (listen(2) on the old socket again would
// not do: it would get a new ephemeral port.) A unix socket is bound at
// the same path with the same mode; a live socket another process has put
// at that path meanwhile is left alone, and Rebind fails.
func (s *Socket) Rebind() error {
	spec := s.Spec
	if spec.Network != "unix" {
		spec.Address = s.Addr.String()
	}
	syscall.SetsockoptInt(int(s.File.Fd()), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	fresh, err := Bind(spec)
	if err != nil {
		return err
	}
	s.File.Close()
	*s = *fresh
	return nil
}
