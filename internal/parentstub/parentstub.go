// Package parentstub is the parent baton puts between itself and an app
// that, once it serves, signals its own parent: apps built on
// github.com/fvbock/endless and github.com/facebookgo/grace send SIGTERM to
// their parent process to tell the previous generation to stop. Under
// baton that parent would be the master, and a SIGTERM to the master stops
// the service. So each generation's main process is this stub instead: a
// re-exec of baton that starts the app as its only child and
//
//   - takes any SIGTERM it receives as the app's "I serve" and sends
//     READY=1 on NOTIFY_SOCKET (once), never stopping itself for it;
//   - gets the signals the master means for the app (the drain signal,
//     USR1, USR2, WINCH) as bytes on a pipe from the master, not as
//     signals, so that they cannot be mistaken for the app's SIGTERM, and
//     forwards each to the app;
//   - ignores every other signal it catches: a signal sent to the whole
//     process group reaches the app directly;
//   - sends the drain signal to the app if the master's pipe closes while
//     the app runs (the master died);
//   - exits as the app did: with its status, or killed by its signal.
//
// The stub stays in the generation's process group with the app, so a
// SIGKILL to the group at the drain timeout ends both. Nothing happens on
// import: internal/reexec calls Run when the environment selects the stub.
// The master sets its environment (envnames.ParentStub, StubControl and
// StubDrain).
package parentstub

import (
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/envnames"
)

func fail(msg string) int {
	os.Stderr.WriteString("baton parent stub: " + msg + "\n")
	return 127
}

// Run is the stub's whole life, with app the path of the app
// (envnames.ParentStub's value): it starts the app and returns the stub's
// exit status once the app has exited, 127 if the app could not be
// started. For an app killed by a signal, the stub first kills itself with
// that signal, so that its parent sees what the app's parent would have
// seen.
func Run(app string) int {
	ctl, err1 := strconv.Atoi(os.Getenv(envnames.StubControl))
	drainN, err2 := strconv.Atoi(os.Getenv(envnames.StubDrain))
	if err1 != nil || err2 != nil || ctl < 3 {
		return fail("bad " + envnames.StubControl + " or " + envnames.StubDrain)
	}
	drain := syscall.Signal(drainN)
	for _, k := range []string{envnames.ParentStub, envnames.StubControl, envnames.StubDrain} {
		os.Unsetenv(k)
	}
	syscall.CloseOnExec(ctl)
	// Its own image, which exec can reach even when the file it came from
	// has been deleted or replaced.
	const self = "/proc/self/exe"

	// Caught before the app exists: its SIGTERM must never take the
	// default action and kill the stub.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)

	files := []uintptr{0, 1, 2}
	for fd := 3; fd < ctl; fd++ {
		files = append(files, uintptr(fd))
	}
	// The app's parent-death signal follows the thread that forks it.
	runtime.LockOSThread()
	pidfd := -1
	pid, err := syscall.ForkExec(self, os.Args, &syscall.ProcAttr{
		// Through the exec shim, so that LISTEN_PID names the app.
		Env:   append(os.Environ(), envnames.ExecShim+"="+app),
		Files: files,
		Sys:   &syscall.SysProcAttr{Pdeathsig: drain, PidFD: &pidfd},
	})
	if err != nil {
		return fail("start " + app + ": " + err.Error())
	}
	for fd := 3; fd < ctl; fd++ {
		syscall.Close(fd) // the app's; the master keeps its own
	}

	exited := make(chan syscall.WaitStatus, 1)
	go func() {
		var ws syscall.WaitStatus
		for {
			_, err := syscall.Wait4(pid, &ws, 0, nil)
			if err != syscall.EINTR {
				break
			}
		}
		exited <- ws
	}()
	go forward(os.NewFile(uintptr(ctl), "baton-control"), appProc{pid, pidfd}, drain)

	ready := false
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGTERM && !ready {
				ready = true
				notifyReady()
			}
		case ws := <-exited:
			if ws.Signaled() {
				signal.Reset(ws.Signal())
				syscall.Kill(os.Getpid(), ws.Signal())
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
	}
}

// forward sends the app each signal the master writes, one byte each, and
// the drain signal once the master is gone.
func forward(ctl *os.File, app appProc, drain syscall.Signal) {
	var b [1]byte
	for {
		if n, err := ctl.Read(b[:]); n == 0 || err != nil {
			app.signal(drain)
			return
		}
		app.signal(syscall.Signal(b[0]))
	}
}

// appProc is the app: its PID, and a pidfd for it (-1 on kernels before
// Linux 5.3).
type appProc struct{ pid, fd int }

// signal sends sig to the app through its pidfd, which can never reach
// another process: the stub reaps the app in another goroutine, and its
// PID may be reused as soon as it is reaped. Without pidfds, by number.
func (a appProc) signal(sig syscall.Signal) {
	if a.fd >= 0 {
		unix.PidfdSendSignal(a.fd, sig, nil, 0)
		return
	}
	syscall.Kill(a.pid, sig)
}

// notifyReady sends READY=1 to NOTIFY_SOCKET; the kernel attaches the
// stub's credentials, and the stub is the generation's main process.
func notifyReady() {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer syscall.Close(fd)
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	if err := syscall.Sendto(fd, []byte("READY=1"), 0, &syscall.SockaddrUnix{Name: path}); err != nil {
		os.Stderr.WriteString("baton parent stub: READY=1: " + err.Error() + "\n")
	}
}
