//go:build linux

package host

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/baton-sh/baton/internal/fdlimit"
	"github.com/baton-sh/baton/internal/sockets"
)

// environment builds the environment of workers or hooks (for, in the
// log): the base, then Config.Environment with its files read now. A
// variable of baton's that a file or --env sets is left out, and each
// such assignment logged once per build.
func (h *Host) environment(what string) ([]string, error) {
	env, warnings, err := h.cfg.Environment.Build(h.base)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		h.cfg.Log.Warn().Str("event", "env_ignored").Str("for", what).Msg(w)
	}
	return env, nil
}

// withUmask adds to env, the environment of a process started through
// the exec shim, the umask Config.Umask asks for.
func (h *Host) withUmask(env []string) []string {
	if h.cfg.Umask == nil {
		return env
	}
	return append(env, sockets.UmaskVar(*h.cfg.Umask))
}

// startError says why path could not be started in dir. A permission
// refused to the workers' user is said so: what it needs and who it is.
func (h *Host) startError(path, dir string, err error) error {
	if errors.Is(err, syscall.E2BIG) {
		// Each variable was checked against the kernel's limit; the
		// whole was not, as that limit follows the stack's rlimit.
		return fmt.Errorf("start %s: %w: its arguments and environment together are over the kernel's limit (a quarter of the stack limit, ulimit -s): make --env-file and --env smaller", path, err)
	}
	id := h.cfg.Identity
	if id == nil || !errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("start %s: %w", path, fdlimit.Explain(err))
	}
	where := "its working directory"
	if dir != "" {
		where = dir
	}
	return fmt.Errorf("start %s as %s: %w: that user must be able to enter %s and to run baton's own binary and %s", path, id, err, where, path)
}

// logIdentity says who workers and hooks run as, and with what umask.
func (h *Host) logIdentity() {
	id, mask := h.cfg.Identity, h.cfg.Umask
	if id == nil && mask == nil {
		return
	}
	ev := h.cfg.Log.Info().Str("event", "run_as")
	msg := "workers and hooks run as baton's own user"
	if id != nil {
		ev = ev.Str("user", id.User).Int("uid", id.UID).Str("group", id.Group).Int("gid", id.GID).Ints("groups", id.Groups)
		msg = "workers and hooks run as " + id.String()
	}
	if mask != nil {
		ev = ev.Str("umask", fmt.Sprintf("%04o", *mask))
		msg += fmt.Sprintf(", umask %04o", *mask)
	}
	ev.Msg(msg)
}
