//go:build linux

package proc_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/internal/proc"
)

// The test binary doubles as a process with many threads.
const helperVar = "PROC_TEST_THREADS"

func TestMain(m *testing.M) {
	if v := os.Getenv(helperVar); v != "" {
		n, _ := strconv.Atoi(v)
		for range n {
			go func() {
				runtime.LockOSThread()
				select {}
			}()
		}
		time.Sleep(time.Hour) // until the test kills it
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// start runs name in a process group of its own; the group is killed and
// the process reaped when the test ends, unless reap is false (a zombie
// the test means to keep).
func start(t *testing.T, env []string, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	return cmd
}

// sleeping waits until pid is asleep (it has started and is waiting), and
// returns its stat line.
func sleeping(t *testing.T, pid int) proc.Stat {
	t.Helper()
	var s proc.Stat
	harness.Eventually(t, 10*time.Second, fmt.Sprintf("process %d asleep", pid), func() bool {
		var err error
		s, err = proc.ReadStat(pid)
		return err == nil && s.State == 'S'
	})
	return s
}

// zombie starts a process that exits at once and is not reaped.
func zombie(t *testing.T) *exec.Cmd {
	t.Helper()
	z := start(t, nil, "true")
	harness.Eventually(t, 10*time.Second, "a zombie", func() bool {
		s, err := proc.ReadStat(z.Process.Pid)
		return err == nil && s.State == 'Z'
	})
	return z
}

// oddName links sleep under a name that ps shows as it is: the comm of a
// process is the base name of what it exec'd, here with spaces and
// parentheses in it.
func oddName(t *testing.T, name string) string {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), name)
	if err := os.Symlink(sleep, link); err != nil {
		t.Fatal(err)
	}
	return link
}

func TestReadStat(t *testing.T) {
	self := os.Getpid()
	sid, _ := unix.Getsid(0)
	for _, tc := range []struct {
		name    string
		start   func(t *testing.T) *exec.Cmd
		comm    string
		state   byte
		threads int // at least
	}{
		{"sleep", func(t *testing.T) *exec.Cmd { return start(t, nil, "sleep", "60") }, "sleep", 'S', 1},
		{"comm with spaces and parentheses", func(t *testing.T) *exec.Cmd {
			return start(t, nil, oddName(t, ") a (b) )"), "60")
		}, ") a (b) )", 'S', 1},
		{"comm cut at 15 bytes", func(t *testing.T) *exec.Cmd {
			return start(t, nil, oddName(t, "sixteen-bytes-x)"), "60")
		}, "sixteen-bytes-x", 'S', 1},
		{"zombie", zombie, "true", 'Z', 1},
		{"threads", func(t *testing.T) *exec.Cmd {
			return start(t, []string{helperVar + "=8"}, os.Args[0])
		}, filepath.Base(os.Args[0]), 'S', 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := tc.start(t)
			pid := cmd.Process.Pid
			var s proc.Stat
			harness.Eventually(t, 10*time.Second, "its stat line", func() bool {
				var err error
				s, err = proc.ReadStat(pid)
				return err == nil && s.State == tc.state && s.Threads >= tc.threads
			})
			want := proc.Stat{PID: pid, Comm: tc.comm, State: tc.state, PPID: self, PGID: pid, SID: sid,
				UTime: s.UTime, STime: s.STime, Threads: s.Threads, StartTime: s.StartTime}
			if len(want.Comm) > 15 {
				want.Comm = want.Comm[:15]
			}
			if s != want {
				t.Errorf("ReadStat(%d) = %+v, want %+v", pid, s, want)
			}
			if s.StartTime == 0 {
				t.Errorf("ReadStat(%d): no start time", pid)
			}
			if s.Dead() != (tc.state == 'Z') {
				t.Errorf("Dead() = %v for state %c", s.Dead(), s.State)
			}
		})
	}
	if _, err := proc.ReadStat(1 << 30); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadStat of no process = %v, want fs.ErrNotExist", err)
	}
}

func TestParseStat(t *testing.T) {
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22\n"
	for _, tc := range []struct {
		line string
		want proc.Stat
		ok   bool
	}{
		{"12 (sh) S 1 12 12 0 -1 4194560 1 0 0 0 7 3 0 0 20 0 1 0 4242 0 0\n",
			proc.Stat{PID: 12, Comm: "sh", State: 'S', PPID: 1, PGID: 12, SID: 12, UTime: 7, STime: 3, Threads: 1, StartTime: 4242}, true},
		{"7 (a) (b) c) Z" + tail,
			proc.Stat{PID: 7, Comm: "a) (b) c", State: 'Z', PPID: 1, PGID: 2, SID: 3, UTime: 11, STime: 12, Threads: 17, StartTime: 19}, true},
		{"7 () R" + tail, proc.Stat{PID: 7, State: 'R', PPID: 1, PGID: 2, SID: 3, UTime: 11, STime: 12, Threads: 17, StartTime: 19}, true},
		{"7 (x) S 1 2 3\n", proc.Stat{}, false},             // cut short
		{"7 (x S" + tail, proc.Stat{}, false},               // no ')'
		{"x (sh) S" + tail, proc.Stat{}, false},             // no PID
		{"7 (sh) SS" + tail, proc.Stat{}, false},            // a state of two letters
		{"7 (sh) S one 2 3" + tail[6:], proc.Stat{}, false}, // a PPID that is no number
		{"", proc.Stat{}, false},
	} {
		got, err := proc.ParseStat([]byte(tc.line))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseStat(%q) = %+v, %v; want %+v, ok %v", tc.line, got, err, tc.want, tc.ok)
		}
	}
}

func TestOpen(t *testing.T) {
	sleep := start(t, nil, "sleep", "60")
	s := sleeping(t, sleep.Process.Pid)
	z := zombie(t)
	for _, tc := range []struct {
		name   string
		pid    int
		expect func(proc.Stat) bool
		err    error
	}{
		{"any", s.PID, nil, nil},
		{"its parent", s.PID, proc.ParentIs(os.Getpid()), nil},
		{"another parent", s.PID, proc.ParentIs(1), proc.ErrNotExpected},
		{"its start", s.PID, proc.StartedAt(s.StartTime), nil},
		{"a later start: its PID reused", s.PID, proc.StartedAt(s.StartTime + 1), proc.ErrNotExpected},
		{"a zombie", z.Process.Pid, nil, unix.ESRCH},
		{"no such process", 1 << 30, nil, unix.ESRCH},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd, got, err := proc.Open(tc.pid, tc.expect)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Open(%d) = %v, want %v", tc.pid, err, tc.err)
			}
			if err != nil {
				if fd != -1 {
					t.Errorf("Open failed and returned fd %d", fd)
				}
				return
			}
			defer fd.Close()
			if got.PID != tc.pid || got.StartTime != s.StartTime || fd.Exited() {
				t.Errorf("Open(%d) = %+v, exited %v", tc.pid, got, fd.Exited())
			}
		})
	}
}

// A pidfd signals, waits for and sees the exit of its process, and a
// signal after the exit reaches nobody, reaped or not.
func TestPidFD(t *testing.T) {
	for _, reap := range []bool{false, true} {
		t.Run(fmt.Sprintf("reaped %v", reap), func(t *testing.T) {
			sleep := start(t, nil, "sleep", "60")
			fd, err := proc.OpenChild(sleep.Process.Pid)
			if err != nil {
				t.Fatal(err)
			}
			defer fd.Close()
			if fd.Exited() {
				t.Fatal("Exited before any signal")
			}
			begin := time.Now()
			if fd.Wait(50 * time.Millisecond) {
				t.Fatal("Wait reported an exit of a sleeping process")
			}
			if took := time.Since(begin); took < 50*time.Millisecond {
				t.Fatalf("Wait(50ms) returned after %v", took)
			}
			if err := fd.Signal(unix.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if !fd.Wait(10 * time.Second) {
				t.Fatal("no exit within 10s of SIGTERM")
			}
			if !fd.Exited() || !proc.WaitAny([]proc.PidFD{fd}, 0) {
				t.Fatal("Exited or WaitAny do not see the exit Wait saw")
			}
			if reap {
				sleep.Wait()
			}
			if err := fd.Signal(unix.SIGKILL); err != nil {
				t.Fatalf("Signal after the exit = %v, want nil", err)
			}
		})
	}
}

// A group is signalled through its leader's pidfd after the leader has
// exited and been reaped, and only that group: the kernel names it by the
// pidfd's PID.
func TestSignalGroup(t *testing.T) {
	if err := proc.Supported(); err != nil {
		t.Skip("no pidfds:", err)
	}
	// The leader leaves two sleeps in its group and exits.
	leader := start(t, nil, "sh", "-c", "sleep 60 & sleep 61 & exit 0")
	fd, err := proc.OpenChild(leader.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	pgid := leader.Process.Pid
	harness.Eventually(t, 10*time.Second, "two sleeps in the group", func() bool {
		return len(proc.LiveGroup(pgid)) == 2
	})
	leader.Wait()
	bystander := start(t, nil, "sleep", "62")
	sleeping(t, bystander.Process.Pid)

	err = fd.SignalGroup(0)
	if errors.Is(err, proc.ErrNoGroupSignal) {
		t.Skip("this kernel is older than Linux 6.9:", err)
	}
	if err != nil {
		t.Fatalf("SignalGroup(0) of a group with members = %v", err)
	}
	if err := fd.SignalGroup(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, "the group killed", func() bool {
		return len(proc.LiveGroup(pgid)) == 0
	})
	if s, err := proc.ReadStat(bystander.Process.Pid); err != nil || s.Dead() {
		t.Fatalf("a process of another group was hit: %+v, %v", s, err)
	}

	// A group whose only member has been reaped is empty.
	gone := start(t, nil, "true")
	gfd, err := proc.OpenChild(gone.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer gfd.Close()
	gone.Wait()
	if err := gfd.SignalGroup(0); !errors.Is(err, unix.ESRCH) {
		t.Fatalf("SignalGroup(0) of an empty group = %v, want ESRCH", err)
	}
}

// Group lists zombies, LiveGroup does not.
func TestGroup(t *testing.T) {
	sleep := start(t, nil, "sh", "-c", "true & exec sleep 60")
	pgid := sleep.Process.Pid
	var all []proc.Stat
	harness.Eventually(t, 10*time.Second, "sleep with a zombie child in its group", func() bool {
		all = proc.Group(pgid)
		return len(all) == 2 && slices.ContainsFunc(all, func(s proc.Stat) bool { return s.State == 'Z' })
	})
	live := proc.LiveGroup(pgid)
	if len(live) != 1 || live[0].PID != pgid || live[0].Comm != "sleep" || live[0].String() != fmt.Sprintf("%d (sleep)", pgid) {
		t.Fatalf("LiveGroup(%d) = %v, want only the sleep", pgid, live)
	}
}

func TestChildren(t *testing.T) {
	a := start(t, nil, "sleep", "60")
	b := start(t, nil, "sh", "-c", "sleep 61 & wait")
	var grandchild []int
	harness.Eventually(t, 10*time.Second, "sh's child", func() bool {
		grandchild = proc.Children(b.Process.Pid)
		return len(grandchild) == 1
	})
	if s, err := proc.ReadStat(grandchild[0]); err != nil || s.PPID != b.Process.Pid {
		t.Fatalf("Children(%d) = %v: %+v, %v", b.Process.Pid, grandchild, s, err)
	}
	mine := proc.Children(0)
	if !slices.Contains(mine, a.Process.Pid) || !slices.Contains(mine, b.Process.Pid) || slices.Contains(mine, grandchild[0]) {
		t.Fatalf("Children(0) = %v, want %d and %d and not their children", mine, a.Process.Pid, b.Process.Pid)
	}
	if kids := proc.Children(1 << 30); len(kids) != 0 {
		t.Fatalf("Children of no process = %v", kids)
	}
}

func TestGetenv(t *testing.T) {
	sleep := start(t, []string{"PROC_TEST_A=1 2", "PROC_TEST_EMPTY="}, "sleep", "60")
	pid := sleep.Process.Pid
	// Start returns once the exec has closed the child's descriptors, a
	// moment before the kernel has set up the new environment.
	harness.Eventually(t, 10*time.Second, "the environment of the exec'd sleep", func() bool {
		_, found, _ := proc.Getenv(pid, "PROC_TEST_A")
		return found
	})
	for _, tc := range []struct {
		name, value string
		found       bool
	}{
		{"PROC_TEST_A", "1 2", true},
		{"PROC_TEST_EMPTY", "", true},
		{"PROC_TEST", "", false}, // a prefix of a name is not the name
		{"PROC_TEST_NONE", "", false},
	} {
		v, found, err := proc.Getenv(pid, tc.name)
		if err != nil || v != tc.value || found != tc.found {
			t.Errorf("Getenv(%d, %s) = %q, %v, %v; want %q, %v", pid, tc.name, v, found, err, tc.value, tc.found)
		}
	}
	env, err := proc.Environ(pid, "PROC_TEST_A", "PROC_TEST_EMPTY", "PROC_TEST_NONE")
	if err != nil || len(env) != 2 || env["PROC_TEST_A"] != "1 2" || env["PROC_TEST_EMPTY"] != "" {
		t.Errorf("Environ(%d) = %v, %v; want PROC_TEST_A and PROC_TEST_EMPTY", pid, env, err)
	}
	if _, found, err := proc.Getenv(1<<30, "PATH"); err == nil || found {
		t.Errorf("Getenv of no process = %v, %v; want an error", found, err)
	}
}

// Uptime counts as StartTime does: a process started before it was read
// started at most then, one started after it at least then.
func TestUptime(t *testing.T) {
	before, err := proc.Uptime()
	if err != nil {
		t.Fatal(err)
	}
	self, err := proc.ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	kid := start(t, nil, "sleep", "60")
	s := sleeping(t, kid.Process.Pid)
	after, err := proc.Uptime()
	if err != nil {
		t.Fatal(err)
	}
	if self.StartTime > before+1 || s.StartTime+1 < before || s.StartTime > after+1 {
		t.Errorf("uptime %d then %d; this process started at %d, the sleep at %d", before, after, self.StartTime, s.StartTime)
	}
}

func TestSamePIDNamespace(t *testing.T) {
	if !proc.SamePIDNamespace(os.Getpid()) {
		t.Fatal("this process is not in its own PID namespace")
	}
	if _, err := exec.LookPath("unshare"); err != nil || os.Geteuid() != 0 {
		t.Skip("a PID namespace of its own needs unshare and root")
	}
	kid := start(t, nil, "unshare", "--pid", "--fork", "--kill-child", "sleep", "60")
	var inner int
	harness.Eventually(t, 10*time.Second, "the sleep in its own PID namespace", func() bool {
		kids := proc.Children(kid.Process.Pid)
		if len(kids) == 1 {
			inner = kids[0]
		}
		return inner != 0
	})
	if proc.SamePIDNamespace(inner) {
		t.Errorf("process %d, in a PID namespace of its own, is said to be in this one", inner)
	}
	if !proc.SamePIDNamespace(kid.Process.Pid) {
		t.Errorf("unshare %d, in this PID namespace, is said not to be", kid.Process.Pid)
	}
}
