//go:build linux

// Package keeper is the process that makes sure nothing a baton master
// started outlives it by more than the drain timeout, whatever ended the
// master, SIGKILL included.
//
// The master starts the keeper once, at start-up, as a re-exec of its own
// binary with argv[0] Comm and envnames.Keeper set: internal/reexec then calls Run
// instead of running baton (nothing happens on import). The keeper sits in its
// own process group, ignores TERM, INT, HUP and PIPE, uses no CPU while it
// waits, and holds one end of a socket pair whose other end only the master
// has. The master tells it about every worker it starts and every process
// it adopts, each with a pidfd, and about every one it reaps (see Msg).
//
// When the socket reaches end of file the master is gone. The keeper then
// does what a stopping master would have done, for what is still running:
//
//   - a worker's main process got the drain signal from the kernel already
//     (its parent-death signal); when it exits, the rest of its process group
//     is killed, as the master kills a worker's group when it reaps it
//     (with DrainGroup, the whole group gets the drain signal instead, and
//     drains until it is empty);
//   - every other process it knows of, or finds descending from one, or in
//     a session that one of them created, gets the drain signal once it is
//     an orphan whose worker has exited;
//   - the drain timeout after the master's end, whatever is left gets
//     SIGKILL: every such process, and every worker's process group.
//
// Then it exits. It waits on pidfds, never by polling, and it signals only
// through pidfds, so a reused PID can never make it signal a stranger. On a
// clean stop the master has reaped and forgotten everything before it
// closes the socket, so the keeper exits having signalled nothing.
package keeper

import (
	"errors"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/proc"
)

// Comm is the keeper's process name, as ps and /proc/PID/comm show it.
const Comm = "baton-keeper"

// Fd is the keeper's end of the socket pair, as the keeper sees it.
const Fd = 3

// Config is what a keeper is told at start.
type Config struct {
	DrainSignal  syscall.Signal
	DrainTimeout time.Duration
	// DrainGroup: the drain signal goes to a worker's whole process
	// group, which drains until it is empty or the drain timeout passes,
	// as under the master's --drain-group.
	DrainGroup bool
	LogJSON    bool
	LogLevel   string // debug, info, warn or error
	// OutputRate is the master's workerlog.Config.Rate, for the output
	// of workers the keeper reads once the master is gone.
	OutputRate int
	// Master and MasterStart name the master (its PID and proc.Stat's
	// StartTime): a process started since then whose environment says
	// envnames.MasterPID=Master descends from one of its workers or
	// hooks. 0: unknown, no process is taken in by its environment.
	Master      int
	MasterStart uint64
}

// String encodes c as the value of envnames.Keeper, which makes a baton
// binary started with it run as a keeper.
func (c Config) String() string {
	format := "console"
	if c.LogJSON {
		format = "json"
	}
	return "signal=" + strconv.Itoa(int(c.DrainSignal)) + ",timeout=" + c.DrainTimeout.String() +
		",group=" + strconv.FormatBool(c.DrainGroup) + ",log=" + format + ",level=" + c.LogLevel +
		",rate=" + strconv.Itoa(c.OutputRate) +
		",master=" + strconv.Itoa(c.Master) + "." + strconv.FormatUint(c.MasterStart, 10)
}

func parseConfig(s string) (Config, error) {
	c := Config{DrainSignal: syscall.SIGTERM, DrainTimeout: 30 * time.Second, LogJSON: true, LogLevel: "info"}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		var err error
		switch k {
		case "signal":
			var n int
			n, err = strconv.Atoi(v)
			c.DrainSignal = syscall.Signal(n)
		case "timeout":
			c.DrainTimeout, err = time.ParseDuration(v)
		case "group":
			c.DrainGroup, err = strconv.ParseBool(v)
		case "log":
			c.LogJSON = v != "console"
		case "level":
			c.LogLevel = v
		case "rate":
			c.OutputRate, err = strconv.Atoi(v)
		case "master":
			pid, start, _ := strings.Cut(v, ".")
			if c.Master, err = strconv.Atoi(pid); err == nil {
				c.MasterStart, err = strconv.ParseUint(start, 10, 64)
			}
		}
		if err != nil {
			return c, errors.New("bad " + envnames.Keeper + " " + kv)
		}
	}
	return c, nil
}

// Run is the keeper's whole life, with config envnames.Keeper's value: it returns once
// the master is gone and whatever it left has been drained or killed, or
// at once if config cannot be parsed. It returns the keeper's exit status:
// 0, or 2 for a bad config, which it has reported on stderr.
func Run(config string) int {
	cfg, err := parseConfig(config)
	if err != nil {
		os.Stderr.WriteString("baton keeper: " + err.Error() + "\n")
		return 2
	}
	os.WriteFile("/proc/self/comm", []byte(Comm), 0)
	// The master's signals are for the master, even when they reach its
	// whole process group or unit (a supervisor's TERM, a terminal's ^C or
	// ^\, `systemctl kill --signal=TTIN` without --kill-whom=main): TTIN,
	// TTOU and TSTP would stop the keeper, USR1 and USR2 end it. PIPE: a
	// log reader gone must not end the keeper.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGPIPE,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGTSTP, syscall.SIGUSR1, syscall.SIGUSR2)
	k := &keeper{cfg: cfg, log: newLogger(cfg), known: map[int]*member{}}
	k.listen(Fd)
	out := k.readOutput()
	k.release()
	out.wait(outputDrain)
	k.log.flush(logFlush)
	return 0
}

// logFlush bounds how long a keeper that has done its job waits for its
// last log lines to be written: a stalled log reader must not keep it.
const logFlush = time.Second

type keeper struct {
	cfg   Config
	log   *logger
	known map[int]*member // what the master told of, by PID
}

// listen applies the master's messages until the socket ends.
func (k *keeper) listen(fd int) {
	buf := make([]byte, MsgSize+1)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, flags, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			k.log.log(lError, "keeper cannot read from the master: taking it as gone", "event", "keeper_read_failed", "error", err.Error())
			return
		}
		fds := rights(oob[:oobn])
		if n == 0 && len(fds) == 0 {
			return // end of file: the master is gone
		}
		m, err := Decode(buf[:n])
		if err == nil && flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
			err = errors.New("keeper message truncated")
		}
		if err == nil && (m.Op == OpForget) != (len(fds) == 0) {
			err = errors.New("keeper message with a wrong number of pidfds")
		}
		if err != nil {
			closeAll(fds)
			k.log.log(lError, err.Error(), "event", "keeper_bad_message")
			continue
		}
		k.apply(m, fds)
	}
}

func (k *keeper) apply(m Msg, fds []int) {
	if old := k.known[m.PID]; old != nil {
		old.fd.Close()
		closeAll(old.out)
		delete(k.known, m.PID)
	}
	switch m.Op {
	case OpWorker, OpStray:
		mb := &member{pid: m.PID, fd: proc.PidFD(fds[0]), gen: m.Gen, worker: m.Op == OpWorker}
		rest := fds[1:]
		if mb.worker && len(rest) == 2 {
			mb.out, rest = rest, nil
		}
		closeAll(rest)
		k.known[m.PID] = mb
	}
}

func rights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if r, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, r...)
		}
	}
	return fds
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
