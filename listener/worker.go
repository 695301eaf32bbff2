package listener

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/baton-sh/baton/notify"
)

var inherited struct {
	once  sync.Once
	files map[string]*os.File
	err   error
}

// Inherited returns the sockets passed to this process by baton or systemd,
// keyed by their LISTEN_FDNAMES name (an unnamed fd is "fd3", "fd4", …).
// It is empty when LISTEN_PID is not this process: the variables were then
// meant for another one. The descriptors are marked close-on-exec so they do
// not leak into programs the worker starts. The result is computed once;
// each file is handed out once by Listen or ListenPacket.
func Inherited() (map[string]*os.File, error) {
	inherited.once.Do(func() {
		inherited.files, inherited.err = readInherited()
	})
	return inherited.files, inherited.err
}

func readInherited() (map[string]*os.File, error) {
	files := map[string]*os.File{}
	if os.Getenv(EnvListenPID) != strconv.Itoa(os.Getpid()) {
		return files, nil
	}
	n, err := strconv.Atoi(os.Getenv(EnvListenFDs))
	if err != nil || n < 0 {
		return files, fmt.Errorf("%s=%q is not a count of descriptors", EnvListenFDs, os.Getenv(EnvListenFDs))
	}
	var names []string
	if v := os.Getenv(EnvListenFDNames); v != "" {
		names = strings.Split(v, ":")
	}
	for i := 0; i < n; i++ {
		fd := FirstFD + i
		syscall.CloseOnExec(fd)
		name := "fd" + strconv.Itoa(fd)
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		files[name] = os.NewFile(uintptr(fd), name)
	}
	return files, nil
}

func take(name string) (*os.File, error) {
	files, err := Inherited()
	if err != nil {
		return nil, err
	}
	f, ok := files[name]
	if ok {
		delete(files, name)
	}
	return f, nil
}

// Listen returns the inherited stream socket called name. Without one (the
// program was started by hand, say with go run) it binds network/address
// itself, so the same binary works with and without baton.
func Listen(name, network, address string) (net.Listener, error) {
	f, err := take(name)
	if err != nil || f == nil {
		if err != nil {
			return nil, err
		}
		return net.Listen(network, address)
	}
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("inherited socket %q: %w", name, err)
	}
	return l, nil
}

// ListenPacket is Listen for datagram sockets (udp, unixgram).
func ListenPacket(name, network, address string) (net.PacketConn, error) {
	f, err := take(name)
	if err != nil || f == nil {
		if err != nil {
			return nil, err
		}
		return net.ListenPacket(network, address)
	}
	defer f.Close()
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("inherited socket %q: %w", name, err)
	}
	return c, nil
}

// Ready tells baton (or systemd) that this process serves: baton then
// drains the previous generation. It is a no-op when NOTIFY_SOCKET is not
// set, so it is safe to call unconditionally.
func Ready() error { return notify.Send("READY=1") }

// Stopping tells baton that this process has begun to shut down.
func Stopping() error { return notify.Send("STOPPING=1") }

// Status sets a free-form status line that baton logs.
func Status(s string) error { return notify.Send("STATUS=" + s) }
