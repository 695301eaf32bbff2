package activation

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

// Socket is a passed descriptor as far as telling which one a program
// means: the name it was passed under and what it is bound to.
type Socket struct {
	Name string
	// Addr is the address it is bound to: a *net.TCPAddr for a stream IP
	// socket, a *net.UDPAddr for a datagram one, a *net.UnixAddr (Net
	// "unix", "unixgram" or "unixpacket") for a unix socket. It is nil
	// when the descriptor is none of these; such a socket is only ever
	// chosen by name.
	Addr net.Addr
	// DualStack is set for an IPv6 socket that takes IPv4 connections too
	// (IPV6_V6ONLY off): what systemd binds for ListenStream=PORT, and Go
	// for "tcp" on an empty host.
	DualStack bool
}

// Describe reads what f, passed under name, is bound to. It fails when f
// is not an IP or unix socket. It never calls f.Fd, which would switch a
// socket shared with other processes to blocking mode.
func Describe(name string, f *os.File) (Socket, error) {
	s := Socket{Name: name}
	rc, err := f.SyscallConn()
	if err != nil {
		return s, err
	}
	var (
		typ, v6only int
		sa          syscall.Sockaddr
	)
	if cerr := rc.Control(func(fd uintptr) {
		if typ, err = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TYPE); err != nil {
			return
		}
		if sa, err = syscall.Getsockname(int(fd)); err != nil {
			return
		}
		if _, ok := sa.(*syscall.SockaddrInet6); ok {
			v6only, err = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY)
		}
	}); cerr != nil {
		return s, cerr
	}
	if err != nil {
		return s, fmt.Errorf("not a socket: %w", err)
	}
	var ip net.IP
	var port int
	var zone string
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		ip, port = append(net.IP(nil), sa.Addr[:]...), sa.Port
	case *syscall.SockaddrInet6:
		ip, port, zone = append(net.IP(nil), sa.Addr[:]...), sa.Port, zoneName(sa.ZoneId)
		s.DualStack = v6only == 0
	case *syscall.SockaddrUnix:
		switch typ {
		case syscall.SOCK_STREAM:
			s.Addr = &net.UnixAddr{Name: sa.Name, Net: "unix"}
		case syscall.SOCK_DGRAM:
			s.Addr = &net.UnixAddr{Name: sa.Name, Net: "unixgram"}
		case syscall.SOCK_SEQPACKET:
			s.Addr = &net.UnixAddr{Name: sa.Name, Net: "unixpacket"}
		default:
			return s, fmt.Errorf("unix socket of type %d, neither stream, datagram nor seqpacket", typ)
		}
		return s, nil
	default:
		return s, fmt.Errorf("socket of family %T, neither IP nor unix", sa)
	}
	switch typ {
	case syscall.SOCK_STREAM:
		s.Addr = &net.TCPAddr{IP: ip, Port: port, Zone: zone}
	case syscall.SOCK_DGRAM:
		s.Addr = &net.UDPAddr{IP: ip, Port: port, Zone: zone}
	default:
		return s, fmt.Errorf("IP socket of type %d, neither stream nor datagram", typ)
	}
	return s, nil
}

func zoneName(id uint32) string {
	if id == 0 {
		return ""
	}
	if ifi, err := net.InterfaceByIndex(int(id)); err == nil {
		return ifi.Name
	}
	return strconv.FormatUint(uint64(id), 10)
}

// Choose returns the index in passed of the socket a program means when
// it asks for the socket called name, or else for network and address (as
// net.Listen takes them), or -1 when none is that socket:
//
//   - the only one called name, whatever it is bound to;
//   - among several called name (systemd names every socket of a .socket
//     unit after the unit unless FileDescriptorName= says otherwise), the
//     first that Matches network and address;
//   - with none called name, the first that Matches network and address.
//
// The master (for each --listen spec) and a worker's listener.Listen both
// choose with it, so that both ends of baton mean the same socket by the
// same words.
func Choose(passed []Socket, name, network, address string) int {
	named := 0
	for _, s := range passed {
		if s.Name == name {
			named++
		}
	}
	for i, s := range passed {
		switch {
		case named == 1 && s.Name == name:
			return i
		case (named == 0 || s.Name == name) && s.Matches(network, address):
			return i
		}
	}
	return -1
}

// Matches reports whether s is the socket a program means when it asks to
// listen on network and address (as net.Listen and net.ListenPacket take
// them, and as a --listen spec says them). They must have
//
//   - the same transport: tcp, tcp4 and tcp6 mean a stream IP socket, udp,
//     udp4 and udp6 a datagram IP socket, unix, unixgram and unixpacket a
//     unix socket;
//   - for IP, the same port, which is never 0: port 0 asks for a port
//     nobody holds yet;
//   - for IP, the same host: the same IP (an IPv4-mapped IPv6 address is
//     that IPv4 address; a host name is resolved as net.Listen resolves
//     it), or wildcards on both sides that take connections of an IP
//     family in common. A wildcard host ("", "0.0.0.0", "::", "[::]")
//     takes IPv4 under tcp4 and udp4, IPv6 under tcp6 and udp6, and under
//     tcp and udp both, except 0.0.0.0, which is IPv4 only (as systemd
//     and baton's --listen bind it). A socket on 0.0.0.0 takes IPv4, one
//     on [::] IPv6, and IPv4 too when it is dual-stack. So systemd's
//     ListenStream=8080, bound to [::]:8080 dual-stack, is what tcp://:8080,
//     tcp://0.0.0.0:8080, tcp4://:8080 and tcp6://[::]:8080 all mean;
//   - for unix, the same path, whatever the type: one path is one socket.
//
// Binding network and address anew would collide with any socket that
// matches (EADDRINUSE), so taking that socket is the only way to serve
// what was asked.
func (s Socket) Matches(network, address string) bool {
	switch network {
	case "unix", "unixgram", "unixpacket":
		a, ok := s.Addr.(*net.UnixAddr)
		return ok && address != "" && a.Name == address
	case "tcp", "tcp4", "tcp6":
		a, ok := s.Addr.(*net.TCPAddr)
		if !ok {
			return false
		}
		want, err := net.ResolveTCPAddr(network, address)
		return err == nil && s.sameHostPort(network, address, want.IP, want.Port, a.IP, a.Port)
	case "udp", "udp4", "udp6":
		a, ok := s.Addr.(*net.UDPAddr)
		if !ok {
			return false
		}
		want, err := net.ResolveUDPAddr(network, address)
		return err == nil && s.sameHostPort(network, address, want.IP, want.Port, a.IP, a.Port)
	}
	return false
}

// IP families a socket takes connections of.
const (
	ipv4 = 1 << iota
	ipv6
)

// sameHostPort compares the host and port address asks for (resolved to
// wantIP and wantPort) with those s is bound to.
func (s Socket) sameHostPort(network, address string, wantIP net.IP, wantPort int, ip net.IP, port int) bool {
	if wantPort == 0 || wantPort != port {
		return false
	}
	host, _, _ := net.SplitHostPort(address) // valid: it resolved
	hostIP := net.ParseIP(host)
	if host != "" && (hostIP == nil || !hostIP.IsUnspecified()) {
		return wantIP.Equal(ip)
	}
	if !ip.IsUnspecified() {
		return false
	}
	var want int
	switch network[len(network)-1] {
	case '4':
		want = ipv4
	case '6':
		want = ipv6
	default:
		want = ipv4 | ipv6
		if hostIP != nil && hostIP.To4() != nil {
			want = ipv4
		}
	}
	got := ipv6
	switch {
	case ip.To4() != nil:
		got = ipv4
	case s.DualStack:
		got = ipv4 | ipv6
	}
	return want&got != 0
}
