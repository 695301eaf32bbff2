package upgrader

import (
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
		if name := strings.TrimPrefix(strings.ToUpper(tc.in), "SIG"); err == nil && name != "" && name[0] > '9' && signalName(got) != name {
			t.Errorf("signalName(%v) = %q, want %q", got, signalName(got), name)
		}
	}
}

func TestParseProtocol(t *testing.T) {
	for in, want := range map[string]Protocol{"systemd": ProtocolSystemd, "tableflip": ProtocolTableflip} {
		if got, err := ParseProtocol(in); err != nil || got != want {
			t.Errorf("ParseProtocol(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "Systemd", "inetd"} {
		if _, err := ParseProtocol(in); err == nil {
			t.Errorf("ParseProtocol(%q) accepted", in)
		}
	}
}

func TestWithGenerationReplacesAnInheritedOne(t *testing.T) {
	got := withGeneration([]string{"A=1", EnvGeneration + "=7", "B=2", EnvGeneration + "X=keep"}, 3)
	want := []string{"A=1", "B=2", EnvGeneration + "X=keep", EnvGeneration + "=3"}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}
