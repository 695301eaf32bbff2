package integration_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/upgrader"
)

// A release that crashes 300 ms after READY=1, while a long request keeps
// the old generation draining: the reload fails and is rolled back to the
// old release (the deploy's "current" symlink points at the new one by
// then), and status says so. Run once plain and once under a service
// manager's NOTIFY_SOCKET, where the master once panicked.
func TestNewReleaseCrashesAfterReadyWhileOldDrains(t *testing.T) {
	for _, underManager := range []bool{false, true} {
		name := "plain"
		if underManager {
			name = "under a service manager"
		}
		t.Run(name, func(t *testing.T) {
			bin := harness.Build(t)
			dir := t.TempDir()
			harness.Release(t, dir, 1, bin.TestWorker)
			setup := harness.Setup{}
			if underManager {
				setup.Env = []string{"NOTIFY_SOCKET=" + serviceNotifySocket(t)}
			}
			b := harness.StartWith(t, setup, "--listen", "http=tcp://127.0.0.1:0", "--drain-timeout", "20s",
				"--", filepath.Join(dir, "current", "app"))
			b.WaitState(t, 20*time.Second, "first generation serving", func(s upgrader.Status) bool { return s.Generation == 1 })
			first := b.WorkerPID(t, 1)
			url := "http://" + b.Addr(t, "http")
			slow := b.InFlight(t, url, 3*time.Second)

			harness.Release(t, dir, 2, bin.TestWorker, "-crash-after", "300ms")
			code, _, errOut := b.ReloadWait(t, 30*time.Second)
			if code != 1 || !strings.Contains(errOut, "after it was ready, during the reload") || !strings.Contains(errOut, "rolled back") {
				t.Fatalf("reload --wait exited %d: %s; want 1 naming the new generation's crash and the rollback", code, errOut)
			}
			st := b.State(t)
			if st.Generation != 1 || st.LastReload == nil || st.LastReload.Result != "rolled_back" || len(st.Workers) != 1 ||
				st.Workers[0].Generation != 1 || st.Workers[0].PID == first || st.Workers[0].State != "serving" {
				t.Fatalf("status after the rollback: %+v", st)
			}
			if a := <-slow; a.Err != nil {
				t.Fatalf("the slow request on the draining generation: %v", a.Err)
			}
			if body := get(t, url); !strings.Contains(body, "gen=1") || !strings.Contains(body, "pid="+strconv.Itoa(st.Workers[0].PID)) {
				t.Fatalf("answered by %q, want generation 1's fresh worker %d", body, st.Workers[0].PID)
			}
			b.Signal(t, syscall.SIGTERM)
			if code := b.Wait(t, 30*time.Second); code != 0 {
				t.Fatalf("baton exited %d after TERM", code)
			}
			if _, err := os.Stat(b.PIDFile); !os.IsNotExist(err) {
				t.Fatalf("pidfile left behind: %v", err)
			}
		})
	}
}

// serviceNotifySocket is a NOTIFY_SOCKET that reads and discards what
// baton tells its service manager.
func serviceNotifySocket(t *testing.T) string {
	path := filepath.Join(shortTempDir(t), "sd.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	return path
}

func shortTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "bt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// A HUP sent the moment the pidfile names the master is a reload, never
// the default action of SIGHUP (which killed the master with status 129).
func TestHUPAsSoonAsThePidfileAppears(t *testing.T) {
	bin := harness.Build(t)
	for i := 0; i < 5; i++ {
		b := harness.StartNoWait(t, "--listen", "http=tcp://127.0.0.1:0", "--", bin.TestWorker)
		harness.Eventually(t, 10*time.Second, "pidfile written", func() bool {
			_, err := os.Stat(b.PIDFile)
			return err == nil
		})
		b.Signal(t, syscall.SIGHUP)
		b.WaitState(t, 20*time.Second, "the queued reload done", func(s upgrader.Status) bool {
			return s.Generation == 2 && len(s.Workers) == 1
		})
		b.Signal(t, syscall.SIGTERM)
		if code := b.Wait(t, 20*time.Second); code != 0 {
			t.Fatalf("run %d: baton exited %d", i, code)
		}
	}
}

// A worker that shutdown(2)s its inherited listening socket when told to
// drain stops the one socket every generation shares. baton sees it, binds
// the address anew, says which generation did it, and restores service on
// a new generation.
func TestWorkerShutsDownTheSharedSocket(t *testing.T) {
	b, url := startWorker(t, nil, "-shutdown-on-drain")
	before := b.State(t)
	b.Signal(t, syscall.SIGHUP)
	st := b.WaitState(t, 20*time.Second, "service restored on a new generation", func(s upgrader.Status) bool {
		return s.Generation == before.Generation+2 && len(s.Workers) == 1 && s.LastReload != nil && s.LastReload.Trigger == "restore"
	})
	if !st.LastReload.OK {
		t.Fatalf("restore failed: %+v", st.LastReload)
	}
	if body := get(t, url); !strings.Contains(body, "gen=3") {
		t.Fatalf("answered by %q, want generation 3 on the new socket", body)
	}
	lost := b.Find(func(e harness.Event) bool {
		return e.Str("level") == "error" && e.Kind() == "sockets_lost" && e.Int("gen") == 1
	})
	if len(lost) == 0 {
		t.Fatalf("no error line naming generation 1")
	}
	// The next ordinary reload works on the restored socket.
	if code, _, errOut := b.ReloadWait(t, 30*time.Second); code != 0 {
		// generation 3 shuts the socket down too, so this reload also
		// ends in a restore; what matters is that service comes back.
		t.Logf("reload --wait: %d %s", code, errOut)
	}
	b.WaitState(t, 20*time.Second, "serving again", func(s upgrader.Status) bool { return s.Ready && len(s.Workers) == 1 })
	get(t, url)
}

// A worker that leaves a helper in its process group (here a shell's
// background sleep) does not make every reload wait out the drain
// timeout: once the worker has exited, the helper is told to drain too.
func TestHelperInTheWorkersGroupDrains(t *testing.T) {
	bin := harness.Build(t)
	b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--drain-timeout", "20s",
		"--", "sh", "-c", "sleep 1000 & exec "+bin.TestWorker)
	start := time.Now()
	if code, _, errOut := b.ReloadWait(t, 30*time.Second); code != 0 {
		t.Fatalf("reload --wait: %d %s", code, errOut)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the reload took %s: the helper held the drain", took)
	}
	killedSomething := func(e harness.Event) bool {
		switch e.Kind() {
		case "drain_timeout", "group_killed", "stray_killed":
			return true
		}
		return false
	}
	if killed := b.Find(killedSomething); len(killed) > 0 {
		t.Fatalf("something was SIGKILLed: %v", killed)
	}
}
