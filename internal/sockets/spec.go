// Package sockets is the master's side of baton's sockets: parsing the
// --listen specs, binding them once (or adopting the ones a service manager
// passed), holding them for the master's whole life, and describing them to
// a worker the way systemd socket activation does (fds 3, 4, … plus
// LISTEN_FDS and LISTEN_FDNAMES; the exec shim adds LISTEN_PID).
//
// Its guarantee is that a socket, once bound, stays open and listening in
// the master until Close, and that nothing here changes the socket's
// blocking mode after it is bound (see holdable): the workers share it.
package sockets

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// Spec is one parsed --listen flag: "[NAME=]SCHEME://ADDRESS".
type Spec struct {
	// Name is what the worker sees in LISTEN_FDNAMES. It defaults to the
	// scheme followed by the spec's index among all --listen flags, so the
	// first flag "tcp://…" is named "tcp0" and arrives as fd 3.
	Name string
	// Network is the Go network name: tcp, tcp4, tcp6, udp, udp4, udp6 or unix.
	Network string
	// Address is host:port for IP sockets and a filesystem path for unix.
	Address string
	// Mode is the permission of a unix socket file; 0 leaves the umask's.
	Mode os.FileMode
}

var schemes = map[string]bool{
	"tcp": true, "tcp4": true, "tcp6": true,
	"udp": true, "udp4": true, "udp6": true,
	"unix": true,
}

// ParseSpec parses one --listen value. index is its position among all
// --listen flags and only matters for the default name.
func ParseSpec(s string, index int) (Spec, error) {
	var spec Spec
	rest := s
	if i := strings.Index(s, "="); i >= 0 && !strings.Contains(s[:i], "://") {
		spec.Name, rest = s[:i], s[i+1:]
		if err := checkName(spec.Name); err != nil {
			return Spec{}, fmt.Errorf("listen %q: %w", s, err)
		}
	}
	scheme, addr, ok := strings.Cut(rest, "://")
	if !ok {
		return Spec{}, fmt.Errorf("listen %q: want SCHEME://ADDRESS, e.g. tcp://127.0.0.1:8080 or unix:///run/app.sock", s)
	}
	if !schemes[scheme] {
		return Spec{}, fmt.Errorf("listen %q: unknown scheme %q (want tcp, tcp4, tcp6, udp, udp4, udp6 or unix)", s, scheme)
	}
	spec.Network = scheme
	if spec.Name == "" {
		spec.Name = scheme + strconv.Itoa(index)
	}

	if scheme == "unix" {
		path, query, _ := strings.Cut(addr, "?")
		if path == "" {
			return Spec{}, fmt.Errorf("listen %q: unix socket needs a path, e.g. unix:///run/app.sock", s)
		}
		if err := CheckUnixPath(path); err != nil {
			return Spec{}, fmt.Errorf("listen %q: %w", s, err)
		}
		spec.Address = path
		q, err := url.ParseQuery(query)
		if err != nil {
			return Spec{}, fmt.Errorf("listen %q: bad query: %w", s, err)
		}
		for k := range q {
			if k != "mode" {
				return Spec{}, fmt.Errorf("listen %q: unknown option %q (only mode= is understood)", s, k)
			}
		}
		if m := q.Get("mode"); m != "" {
			mode, err := strconv.ParseUint(m, 8, 32)
			if err != nil || mode > 0o777 {
				return Spec{}, fmt.Errorf("listen %q: mode %q is not an octal permission like 0660", s, m)
			}
			spec.Mode = os.FileMode(mode)
		}
		return spec, nil
	}

	if strings.Contains(addr, "?") {
		return Spec{}, fmt.Errorf("listen %q: options are only understood for unix sockets", s)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return Spec{}, fmt.Errorf("listen %q: want HOST:PORT: %v", s, err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || (port != "0" && p == 0) {
		return Spec{}, fmt.Errorf("listen %q: port %q is not a number from 0 to 65535", s, port)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		// Binding a name that resolves to several addresses picks one at
		// random; say so early instead of surprising the user at runtime.
		return Spec{}, fmt.Errorf("listen %q: host %q must be an IP address or localhost", s, host)
	}
	spec.Address = addr
	return spec, nil
}

// MaxUnixPath is the longest path a unix socket address holds: 108 bytes
// of sun_path on Linux, less the terminating NUL.
const MaxUnixPath = 107

// CheckUnixPath refuses a socket path too long for a unix socket address,
// which the kernel would report only as "invalid argument".
func CheckUnixPath(path string) error {
	if len(path) > MaxUnixPath {
		return fmt.Errorf("unix socket path %.40q… is %d bytes, more than the %d a unix socket address holds: use a shorter path (a relative one, or a shorter directory)", path, len(path), MaxUnixPath)
	}
	return nil
}

// checkName keeps names inside what LISTEN_FDNAMES can carry: systemd
// separates names with ':' and limits them to printable ASCII.
func checkName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("name must be 1 to 255 characters")
	}
	for _, r := range name {
		if r <= ' ' || r > '~' || r == ':' {
			return fmt.Errorf("name %q may only hold printable ASCII without spaces or ':'", name)
		}
	}
	return nil
}

// String gives the spec back in the form it was parsed from.
func (s Spec) String() string {
	out := s.Name + "=" + s.Network + "://" + s.Address
	if s.Mode != 0 {
		out += fmt.Sprintf("?mode=%04o", s.Mode)
	}
	return out
}

// IsPacket reports whether the spec is a datagram socket (no accept).
func (s Spec) IsPacket() bool { return strings.HasPrefix(s.Network, "udp") }
