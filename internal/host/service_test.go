package host

import (
	"bytes"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
)

// A service manager that stopped reading its notify socket gets a
// keep-alive every half watchdog interval, each one dropped: baton says
// so once, not at every tick, until one gets through again.
func TestServiceKeepAliveToAFullQueueWarnsOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	h := &Host{cfg: Config{ServiceNotify: path, Log: zerolog.New(&log)}}
	for range 1000 { // far more than the socket's queue holds
		h.TellService(ServiceState{Watchdog: true})
	}
	if n := strings.Count(log.String(), `"event":"service_notify_failed"`); n != 1 {
		t.Fatalf("%d service_notify_failed lines for a queue that stayed full, want 1:\n%s", n, log.String())
	}
	// It reads again: keep-alives get through, and the next failure is
	// told anew.
	buf := make([]byte, 64)
	for {
		if _, _, err := syscall.Recvfrom(fd, buf, syscall.MSG_DONTWAIT); err != nil {
			break
		}
	}
	h.TellService(ServiceState{Watchdog: true})
	for range 1000 {
		h.TellService(ServiceState{Watchdog: true})
	}
	if n := strings.Count(log.String(), `"event":"service_notify_failed"`); n != 2 {
		t.Fatalf("%d service_notify_failed lines after the queue drained and filled again, want 2", n)
	}
}
