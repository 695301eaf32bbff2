package host

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
)

// DescribeExit says how a process ended, in the words a user reads.
func DescribeExit(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exited with status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		return "killed by signal " + SignalName(ws.Signal())
	}
	return fmt.Sprintf("ended (wait status %#x)", int(ws))
}

// SignalName gives the short name users type with kill: TERM, HUP, ….
func SignalName(s syscall.Signal) string {
	if n, ok := signalNames[s]; ok {
		return n
	}
	return strconv.Itoa(int(s))
}

var signalNames = map[syscall.Signal]string{
	syscall.SIGHUP: "HUP", syscall.SIGINT: "INT", syscall.SIGQUIT: "QUIT",
	syscall.SIGKILL: "KILL", syscall.SIGUSR1: "USR1", syscall.SIGUSR2: "USR2",
	syscall.SIGTERM: "TERM", syscall.SIGWINCH: "WINCH", syscall.SIGABRT: "ABRT",
	syscall.SIGSEGV: "SEGV", syscall.SIGPIPE: "PIPE", syscall.SIGALRM: "ALRM",
	syscall.SIGCONT: "CONT", syscall.SIGSTOP: "STOP", syscall.SIGTTIN: "TTIN",
	syscall.SIGTTOU: "TTOU",
}

// ParseSignal accepts TERM, SIGTERM, term or 15.
func ParseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	for sig, n := range signalNames {
		if n == name {
			return sig, nil
		}
	}
	return 0, fmt.Errorf("unknown signal %q (want a name like TERM or a number)", s)
}
