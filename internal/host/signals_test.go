package host

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestParseSignal(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want syscall.Signal
		ok   bool
	}{
		{"TERM", syscall.SIGTERM, true},
		{"SIGTERM", syscall.SIGTERM, true},
		{"term", syscall.SIGTERM, true},
		{"sigusr2", syscall.SIGUSR2, true},
		{"QUIT", syscall.SIGQUIT, true},
		{"WINCH", syscall.SIGWINCH, true},
		{"15", syscall.SIGTERM, true},
		{"64", syscall.Signal(64), true},
		{"0", 0, false},
		{"65", 0, false},
		{"-1", 0, false},
		{"", 0, false},
		{"SIG", 0, false},
		{"TERMINATE", 0, false},
	} {
		got, err := ParseSignal(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		// Named signals read back as the short name users type.
		if name := strings.TrimPrefix(strings.ToUpper(tc.in), "SIG"); err == nil && name != "" && name[0] > '9' && SignalName(got) != name {
			t.Errorf("SignalName(%v) = %q, want %q", got, SignalName(got), name)
		}
	}
}

func TestWithWorkerReplacesInheritedOnes(t *testing.T) {
	got := withWorker([]string{"A=1", envGeneration + "=7", "B=2", envMasterPID + "=1", envGeneration + "X=keep", envWorkerIndex + "=9"},
		Start{Generation: 3, Index: 1, Workers: 4})
	want := []string{"A=1", "B=2", envGeneration + "X=keep", envGeneration + "=3", envWorkerIndex + "=1", envWorkers + "=4",
		envMasterPID + "=" + strconv.Itoa(os.Getpid())}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}
