package sockets

import (
	"net"
	"testing"

	"github.com/baton-sh/baton/internal/activation"
)

// passedAs is the Activation of socks, as Activated would read it; the
// IPv6 wildcards among them are dual-stack, as systemd binds them.
func passedAs(socks ...*Socket) *Activation {
	a := &Activation{sockets: socks}
	for _, s := range socks {
		var dual bool
		if t, ok := s.Addr.(*net.TCPAddr); ok {
			dual = t.IP.Equal(net.IPv6unspecified)
		}
		a.passed = append(a.passed, activation.Socket{Name: s.Spec.Name, Addr: s.Addr, DualStack: dual})
	}
	return a
}

func TestActivationTakeMatchesByNameThenAddress(t *testing.T) {
	tcp := func(name, addr string) *Socket {
		a, _ := net.ResolveTCPAddr("tcp", addr)
		return &Socket{Spec: Spec{Name: name, Network: "tcp", Address: addr}, Addr: a, Activated: true}
	}
	unix := &Socket{Spec: Spec{Name: "fd5", Network: "unix", Address: "/run/app.sock"},
		Addr: &net.UnixAddr{Name: "/run/app.sock", Net: "unix"}, Activated: true}
	udp := &Socket{Spec: Spec{Name: "fd6", Network: "udp", Address: "127.0.0.1:53"},
		Addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}, Activated: true}

	for _, tc := range []struct {
		name string
		spec string
		want string // the Spec.Address of the socket taken, "" for none
	}{
		{"by name, whatever the address", "http=tcp://127.0.0.1:9999", "127.0.0.1:8080"},
		{"by address when no name matches", "web=tcp://127.0.0.1:8081", "127.0.0.1:8081"},
		{"localhost resolves to the bound IP", "web=tcp://localhost:8081", "127.0.0.1:8081"},
		{"a port-0 spec only ever matches by name", "web=tcp://127.0.0.1:0", ""},
		{"another port", "web=tcp://127.0.0.1:8082", ""},
		{"a stream spec never takes a datagram socket", "dns=tcp://127.0.0.1:53", ""},
		{"udp by address", "dns=udp://127.0.0.1:53", "127.0.0.1:53"},
		{"unix by path", "sock=unix:///run/app.sock", "/run/app.sock"},
		{"an empty host takes systemd's dual-stack [::]", "web=tcp://:8090", "[::]:8090"},
		{"so does 0.0.0.0, whose IPv4 it takes", "web=tcp://0.0.0.0:8090", "[::]:8090"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := passedAs(tcp("http", "127.0.0.1:8080"), tcp("fd4", "127.0.0.1:8081"), unix, udp, tcp("fd7", "[::]:8090"))
			spec, err := ParseSpec(tc.spec, 0)
			if err != nil {
				t.Fatal(err)
			}
			got := a.Take(spec)
			switch {
			case tc.want == "" && got != nil:
				t.Fatalf("took %v, want none", got.Spec)
			case tc.want != "" && (got == nil || got.Spec.Address != tc.want):
				t.Fatalf("took %v, want the socket on %s", got, tc.want)
			case got != nil && (got.Spec.Name != spec.Name || len(a.Rest()) != 4):
				t.Fatalf("taken socket named %q (want %q), %d left (want 4)", got.Spec.Name, spec.Name, len(a.Rest()))
			}
		})
	}
}

// TestActivationTakeRepeatedNames: systemd names every socket of a .socket
// unit after the unit unless FileDescriptorName= is set, so names repeat;
// each --listen then takes the one on its own address, and none is lost.
func TestActivationTakeRepeatedNames(t *testing.T) {
	tcp := func(name, addr string) *Socket {
		a, _ := net.ResolveTCPAddr("tcp", addr)
		return &Socket{Spec: Spec{Name: name, Network: "tcp", Address: addr}, Addr: a, Activated: true}
	}
	a := passedAs(tcp("app.socket", "127.0.0.1:9001"), tcp("app.socket", "127.0.0.1:9002"))
	for _, tc := range []struct{ spec, want string }{
		{"app.socket=tcp://127.0.0.1:9002", "127.0.0.1:9002"},
		{"api=tcp://127.0.0.1:9001", "127.0.0.1:9001"},
	} {
		spec, err := ParseSpec(tc.spec, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := a.Take(spec)
		if got == nil || got.Spec.Address != tc.want || got.Spec.Name != spec.Name {
			t.Fatalf("Take(%s) = %v, want the socket on %s named %q", tc.spec, got, tc.want, spec.Name)
		}
	}
	if len(a.Rest()) != 0 {
		t.Fatalf("%d sockets left, want 0", len(a.Rest()))
	}
}
