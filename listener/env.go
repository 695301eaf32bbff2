package listener

import (
	"strconv"
	"strings"

	"github.com/baton-sh/baton/internal/execshim"
)

// Environment variables of the systemd socket-activation protocol.
const (
	EnvListenFDs     = "LISTEN_FDS"
	EnvListenFDNames = "LISTEN_FDNAMES"
	EnvListenPID     = "LISTEN_PID"
	EnvNotifySocket  = "NOTIFY_SOCKET"
)

// FirstFD is the descriptor number of the first passed socket, as in
// sd_listen_fds(3): 0, 1 and 2 are stdio.
const FirstFD = 3

// shimEnv marks a process started as the exec shim and carries the path of
// the worker program it is to become.
const shimEnv = execshim.Env

// WorkerEnv returns base with the socket-activation variables for sockets
// and, if notifySocket is not empty, NOTIFY_SOCKET. Variables of the same
// names already in base are dropped: they describe baton's own parent, not
// the worker. LISTEN_PID cannot be known before the worker exists; the exec
// shim (see ShimVar) sets it.
func WorkerEnv(base []string, sockets []*Socket, notifySocket string) []string {
	env := make([]string, 0, len(base)+4)
	for _, kv := range base {
		switch strings.SplitN(kv, "=", 2)[0] {
		case EnvListenFDs, EnvListenFDNames, EnvListenPID, EnvNotifySocket, shimEnv:
			continue
		}
		env = append(env, kv)
	}
	if len(sockets) > 0 {
		names := make([]string, len(sockets))
		for i, s := range sockets {
			names[i] = s.Spec.Name
		}
		env = append(env,
			EnvListenFDs+"="+strconv.Itoa(len(sockets)),
			EnvListenFDNames+"="+strings.Join(names, ":"))
	}
	if notifySocket != "" {
		env = append(env, EnvNotifySocket+"="+notifySocket)
	}
	return env
}

// ShimVar is the environment entry that makes a baton binary, started
// with it, set LISTEN_PID to its own PID and exec worker in place (see
// RunShim). Go offers no hook between fork and exec to set the variable
// directly, and the PID does not change across exec.
func ShimVar(worker string) string { return shimEnv + "=" + worker }

// RunShim turns this process into the worker if it was started with
// ShimVar; otherwise it returns at once. Importing listener already does
// this, from an init function that runs before the heavier packages of the
// program initialise (see internal/execshim), so a ShimPath binary need
// not call it. It only returns on failure, reported before exiting 127.
func RunShim() { execshim.Run() }
