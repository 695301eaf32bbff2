//go:build linux

package keeper

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/proc"
)

func TestMsgRoundTrip(t *testing.T) {
	for _, m := range []Msg{{OpWorker, 1234, 7}, {OpStray, 99, 0}, {OpForget, 1 << 22, 3}} {
		got, err := Decode(m.Encode())
		if err != nil || got != m {
			t.Errorf("Decode(Encode(%+v)) = %+v, %v", m, got, err)
		}
	}
	for _, b := range [][]byte{nil, {'W', 1, 0, 0, 0, 1, 0, 0}, {'X', 1, 0, 0, 0, 1, 0, 0, 0}, {'W', 0, 0, 0, 0, 1, 0, 0, 0}} {
		if m, err := Decode(b); err == nil {
			t.Errorf("Decode(%v) = %+v, want an error", b, m)
		}
	}
}

func TestConfigRoundTrip(t *testing.T) {
	c := Config{DrainSignal: syscall.SIGUSR2, DrainTimeout: 1500 * time.Millisecond, DrainGroup: true, LogJSON: false, LogLevel: "warn", OutputRate: -1}
	got, err := parseConfig(c.String())
	if err != nil || got != c {
		t.Fatalf("parseConfig(%q) = %+v, %v", c.String(), got, err)
	}
	if _, err := parseConfig("timeout=soon"); err == nil {
		t.Fatal("parseConfig accepted a bad timeout")
	}
}

// child starts sh -c script in its own process group and returns it with
// a pidfd, as the master tells the keeper of a worker.
func child(t *testing.T, script string) (*exec.Cmd, proc.PidFD) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fd, err := proc.OpenChild(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		fd.Signal(unix.SIGKILL)
		cmd.Wait()
	})
	return cmd, fd
}

// descendants lists, through /proc, the processes below pid.
func descendants(pid int) []int {
	var out []int
	pids, _ := proc.PIDs()
	for _, p := range pids {
		for q := p; q > 1; {
			pr, err := proc.ReadStat(q)
			if err != nil {
				break
			}
			if pr.PPID == pid {
				out = append(out, p)
				break
			}
			q = pr.PPID
		}
	}
	return out
}

// When the master is gone, the keeper drains a stray at once and, at the
// drain timeout, kills a worker that ignores the drain signal together with
// its process group and a descendant that left for a session of its own:
// on this kernel, and as on kernels that cannot signal a process group
// through a pidfd (before Linux 6.9).
func TestReleaseKillsWhatOutlivesTheDrainTimeout(t *testing.T) {
	t.Run("this kernel", testRelease)
	t.Run("before Linux 6.9", func(t *testing.T) {
		defer func(old func(proc.PidFD, unix.Signal) error) { signalGroup = old }(signalGroup)
		signalGroup = func(proc.PidFD, unix.Signal) error { return proc.ErrNoGroupSignal }
		testRelease(t)
	})
}

func testRelease(t *testing.T) {
	// The worker ignores TERM, as do its two children: one in its process
	// group, one in a new session.
	worker, wfd := child(t, `trap "" TERM; setsid sleep 61 & sleep 62 & wait`)
	stray, sfd := child(t, `exec sleep 63`)
	var below []int
	deadline := time.Now().Add(5 * time.Second)
	for len(below) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling the test's own set-up
		below = descendants(worker.Process.Pid)
	}
	if len(below) < 2 {
		t.Fatalf("the worker's children did not start: %v", below)
	}
	var belowFDs []proc.PidFD
	for _, pid := range below {
		fd, _, err := proc.Open(pid, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer fd.Close()
		belowFDs = append(belowFDs, fd)
	}

	drain := 300 * time.Millisecond
	k := &keeper{cfg: Config{DrainSignal: syscall.SIGTERM, DrainTimeout: drain, LogJSON: true}, log: &logger{json: true, min: lError},
		known: map[int]*member{
			worker.Process.Pid: {pid: worker.Process.Pid, fd: wfd, gen: 1, worker: true},
			stray.Process.Pid:  {pid: stray.Process.Pid, fd: sfd, gen: 0},
		}}
	start := time.Now()
	k.release()
	took := time.Since(start)

	if took < drain || took > drain+2*time.Second {
		t.Errorf("release took %s, want the drain timeout (%s) and little more", took, drain)
	}
	for _, fd := range append([]proc.PidFD{wfd, sfd}, belowFDs...) {
		if !fd.Exited() {
			t.Errorf("a process outlived release: pidfd %d", fd)
		}
	}
	if err := stray.Wait(); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Errorf("the stray ended with %v, want the drain signal (terminated)", err)
	}
	// SIGKILL, or its wait returned as its children were killed first.
	if err := worker.Wait(); err != nil && !strings.Contains(err.Error(), "killed") {
		t.Errorf("the worker ended with %v, want SIGKILL", err)
	}
}

// A worker that exits on its own ends the release at once, and what the
// master has forgotten is left alone.
func TestReleaseEndsWhenEverythingExited(t *testing.T) {
	worker, wfd := child(t, `sleep 0.2`)
	bystander, bfd := child(t, `exec sleep 60`)
	k := &keeper{cfg: Config{DrainSignal: syscall.SIGTERM, DrainTimeout: 10 * time.Second, LogJSON: true}, log: &logger{json: true, min: lError},
		known: map[int]*member{worker.Process.Pid: {pid: worker.Process.Pid, fd: wfd, gen: 1, worker: true}}}
	start := time.Now()
	k.release()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("release took %s after the worker exited on its own", took)
	}
	if bfd.Exited() {
		t.Errorf("a process the keeper was not told of was stopped (%d)", bystander.Process.Pid)
	}
}
