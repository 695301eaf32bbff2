package sockets

import (
	"fmt"
	"os"
	"slices"

	"github.com/baton-sh/baton/internal/activation"
)

// Activation is the set of sockets a service manager passed to this
// process (systemd socket activation, or systemd-socket-activate): they
// were bound before baton started and outlive it, so even a restart of
// baton itself refuses no connection.
type Activation struct {
	sockets []*Socket
	passed  []activation.Socket // what each of sockets is bound to
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
		s, passed, err := adopt(f.Name, f.File)
		if err != nil {
			for _, f := range files[i:] {
				f.File.Close()
			}
			a.Close()
			return nil, err
		}
		a.sockets = append(a.sockets, s)
		a.passed = append(a.passed, passed)
	}
	return a, nil
}

// Close closes every socket no spec has taken.
func (a *Activation) Close() {
	for _, s := range a.sockets {
		s.Close()
	}
	a.sockets, a.passed = nil, nil
}

func adopt(name string, f *os.File) (*Socket, activation.Socket, error) {
	passed, err := activation.Describe(name, f)
	if err != nil {
		return nil, passed, fmt.Errorf("activated socket %q (fd %d): %w", name, f.Fd(), err)
	}
	if f, err = holdable(f); err != nil {
		return nil, passed, fmt.Errorf("activated socket %q: %w", name, err)
	}
	addr := passed.Addr
	return &Socket{Spec: Spec{Name: name, Network: addr.Network(), Address: addr.String()}, File: f, Addr: addr, Activated: true}, passed, nil
}

// Take removes and returns the activated socket spec means, chosen by
// name and else by address as a worker's listener.Listen chooses (see
// activation.Choose): so systemd's ListenStream=8080, bound to [::]:8080,
// is the socket of --listen tcp://:8080. It returns nil when none is; the
// caller then binds spec itself.
func (a *Activation) Take(spec Spec) *Socket {
	pick := activation.Choose(a.passed, spec.Name, spec.Network, spec.Address)
	if pick < 0 {
		return nil
	}
	s := a.sockets[pick]
	a.sockets = slices.Delete(a.sockets, pick, pick+1)
	a.passed = slices.Delete(a.passed, pick, pick+1)
	s.Spec.Name, s.Spec.Mode = spec.Name, spec.Mode
	return s
}

// Rest returns the activated sockets no spec has taken.
func (a *Activation) Rest() []*Socket { return a.sockets }
