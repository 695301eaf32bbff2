package parentstub

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The stub reaps the app in one goroutine and signals it from another:
// once reaped, the app's PID may go to another process. A signal through
// the app's pidfd never reaches that process; one by number does (the
// control case, which shows the test can tell).
func TestSignalNeverReachesAReusedPID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("choosing the next PID (ns_last_pid) needs root")
	}
	for _, byNumber := range []bool{false, true} {
		pidfd := -1
		pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "60"}, &syscall.ProcAttr{Sys: &syscall.SysProcAttr{PidFD: &pidfd}})
		if err != nil {
			t.Fatal(err)
		}
		if pidfd < 0 {
			t.Skip("this kernel gives no pidfds")
		}
		app := appProc{pid, pidfd}
		if byNumber {
			app.fd = -1
		}
		syscall.Kill(pid, syscall.SIGKILL) // our unreaped child: its PID is its own
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
			t.Fatal(err)
		}

		stranger := strangerAt(t, pid)
		if stranger == nil {
			syscall.Close(pidfd)
			t.Skipf("no process could be given PID %d: the machine starts too many", pid)
		}
		app.signal(syscall.SIGKILL)
		killed := exitedWithin(stranger, 200*time.Millisecond)
		stranger.Process.Kill()
		stranger.Wait()
		syscall.Close(pidfd)
		switch {
		case byNumber && !killed:
			t.Fatalf("by number, the signal did not reach process %d, which took the app's PID: the test cannot tell", pid)
		case !byNumber && killed:
			t.Fatalf("the signal meant for the reaped app killed process %d, which took its PID", pid)
		}
	}
}

// strangerAt starts a process with PID pid, or returns nil if another
// process keeps getting it first.
func strangerAt(t *testing.T, pid int) *exec.Cmd {
	t.Helper()
	for range 50 {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Skipf("cannot choose the next PID: %v", err)
		}
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if cmd.Process.Pid == pid {
			return cmd
		}
		cmd.Process.Kill()
		cmd.Wait()
	}
	return nil
}

// exitedWithin reports whether cmd's process exits within d.
func exitedWithin(cmd *exec.Cmd, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		var ws syscall.WaitStatus
		if got, _ := syscall.Wait4(cmd.Process.Pid, &ws, syscall.WNOHANG, nil); got == cmd.Process.Pid {
			// Reaped here: cmd.Wait must not wait for it again.
			cmd.Process.Release()
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}
