package sockets

import (
	"strconv"
	"strings"

	"github.com/baton-sh/baton/internal/activation"
	"github.com/baton-sh/baton/internal/envnames"
)

// EnvNotifySocket is the sd_notify socket variable a worker is given.
const EnvNotifySocket = "NOTIFY_SOCKET"

// WorkerEnv returns base with the socket-activation variables for sockets
// and, if notifySocket is not empty, NOTIFY_SOCKET. Variables of the same
// names already in base are dropped, and so are the exec shim's: they
// describe baton's own parent, not the worker. LISTEN_PID cannot be known before the worker exists; the exec
// shim (see ShimVar) sets it.
func WorkerEnv(base []string, sockets []*Socket, notifySocket string) []string {
	env := make([]string, 0, len(base)+4)
	for _, kv := range base {
		switch strings.SplitN(kv, "=", 2)[0] {
		case activation.EnvFDs, activation.EnvFDNames, activation.EnvPID, EnvNotifySocket, envnames.ExecShim, envnames.Umask:
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
			activation.EnvFDs+"="+strconv.Itoa(len(sockets)),
			activation.EnvFDNames+"="+strings.Join(names, ":"))
	}
	if notifySocket != "" {
		env = append(env, EnvNotifySocket+"="+notifySocket)
	}
	return env
}

// ShimVar is the environment entry that makes a baton binary, started
// with it, set LISTEN_PID to its own PID and exec worker in place (see
// internal/execshim). Go offers no hook between fork and exec to set the
// variable directly, and the PID does not change across exec.
func ShimVar(worker string) string { return envnames.ExecShim + "=" + worker }

// UmaskVar is the environment entry that makes the exec shim set umask
// mask (0 to 0777) before it becomes the worker; without it the worker
// keeps the master's.
func UmaskVar(mask int) string { return envnames.Umask + "=" + strconv.FormatInt(int64(mask), 8) }
