package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/internal/envfile"
	"github.com/baton-sh/baton/internal/runas"
	"github.com/baton-sh/baton/upgrader"
)

// privilegeFlags are the master's flags about who runs as whom, with
// what environment, and who may steer baton.
type privilegeFlags struct {
	user, group  optionalString
	env          listFlag
	envFiles     listFlag
	umask        optionalString
	controlGroup optionalString
}

func (p *privilegeFlags) define(fs *flag.FlagSet) {
	fs.Var(&p.user, "user", "when baton runs as root, run every worker and hook as `USER` (a name or uid) with its groups and its HOME, USER, LOGNAME and SHELL; the master stays root and binds the sockets first, so ports below 1024 work")
	fs.Var(&p.group, "group", "with --user, run workers and hooks with `GROUP` (a name or gid) instead of the user's primary group")
	fs.Var(&p.env, "env", "set `NAME=VALUE` for every worker and hook, over what --env-file sets; repeatable, the last one wins")
	fs.Var(&p.envFiles, "env-file", "read variables for workers and hooks from `PATH` (systemd EnvironmentFile= syntax) at start and anew for every new generation, so a reload picks up an edit; -PATH may be missing; repeatable, later files win")
	fs.Var(&p.umask, "umask", "the `UMASK` workers and hooks start with, in octal such as 027 (default: baton's own)")
	fs.Var(&p.controlGroup, "control-group", "open the control socket to `GROUP` (a name or gid): mode 0660 and that group, so its members may baton reload and baton status (default: mode 0600, for baton's own user)")
}

// check finds the usage errors in the flags; hasControl says whether
// the master has a control socket.
func (p *privilegeFlags) check(hasControl bool) error {
	for _, f := range []struct {
		name string
		v    optionalString
		want string
	}{
		{"--user", p.user, "a user name or uid"},
		{"--group", p.group, "a group name or gid"},
		{"--umask", p.umask, "an octal mask such as 027"},
		{"--control-group", p.controlGroup, "a group name or gid"},
	} {
		if f.v.set && f.v.value == "" {
			return usagef("%s is empty: want %s", f.name, f.want)
		}
	}
	if p.group.set && !p.user.set {
		return usagef("--group needs --user: it is the group of the user workers run as")
	}
	if p.controlGroup.set && !hasControl {
		return usagef("--control-group needs a control socket: give --pidfile PATH or --control PATH")
	}
	if _, err := p.parseUmask(); err != nil {
		return err
	}
	if _, _, err := p.parseEnv(); err != nil {
		return err
	}
	return nil
}

// parseUmask reads --umask: -1 when it is not given.
func (p *privilegeFlags) parseUmask() (int, error) {
	if !p.umask.set {
		return -1, nil
	}
	n, err := strconv.ParseUint(p.umask.value, 8, 32)
	if err != nil || n > 0o777 {
		return 0, usagef("--umask %q: want an octal mask from 0 to 0777, such as 027", p.umask.value)
	}
	return int(n), nil
}

// parseEnv reads --env-file and --env. An --env of one of baton's own
// variables is left out with a warning; a relative --env-file is taken
// from the directory baton starts in, as the shell names it.
func (p *privilegeFlags) parseEnv() (env envfile.Environment, warnings []string, err error) {
	for _, arg := range p.envFiles {
		f, err := envfile.ParseFile(arg)
		if err != nil {
			return env, nil, usageError{err.Error()}
		}
		if f.Path, err = filepath.Abs(f.Path); err != nil {
			return env, nil, usagef("--env-file %s: %v", arg, err)
		}
		env.Files = append(env.Files, f)
	}
	for _, arg := range p.env {
		v, err := envfile.ParseSetting(arg)
		if err != nil {
			return env, nil, usageError{err.Error()}
		}
		if envfile.Reserved(v.Name) {
			warnings = append(warnings, fmt.Sprintf("--env %s: %s is baton's to set: ignored", arg, v.Name))
			continue
		}
		env.Settings = append(env.Settings, v)
	}
	return env, warnings, nil
}

// workerSetup is what the flags ask of every worker and hook start,
// beyond what baton gives every worker (see upgrader.Options.User,
// Environment and Umask).
type workerSetup struct {
	// Identity, when set, is who workers and hooks run as. Nil: as baton
	// runs.
	Identity *runas.Identity
	// Env is applied over the environment, its files read anew for each
	// generation.
	Env envfile.Environment
	// Umask is what workers and hooks start with, or -1 for baton's own.
	Umask int
}

// privileges are the flags resolved at start-up.
type privileges struct {
	workers workerSetup
	// control are the options of the control socket.
	control []control.Option
	// warnings are to be logged once, each with its event.
	warnings []warning
}

// warning is a start-up warning and the log event it is logged as.
type warning struct{ event, msg string }

// resolve looks the flags up in the user and group databases and reads
// the environment files once, so that a mistake stops baton at start
// rather than at its first worker. Its errors are start-up failures.
func (p *privilegeFlags) resolve() (privileges, error) {
	var r privileges
	var err error
	if r.workers.Umask, err = p.parseUmask(); err != nil {
		return r, err
	}
	var envWarnings []string
	if r.workers.Env, envWarnings, err = p.parseEnv(); err != nil {
		return r, err
	}
	for _, w := range envWarnings {
		r.warnings = append(r.warnings, warning{"env_ignored", w})
	}
	if _, _, err := r.workers.Env.Build(nil); err != nil {
		return r, err
	}
	if r.workers.Identity, err = runas.Resolve(p.user.value, p.group.value); err != nil {
		return r, err
	}
	if id := r.workers.Identity; id != nil {
		// Each worker starts as baton's own binary (the exec shim),
		// already running as the user.
		if exe, err := os.Executable(); err == nil {
			if err := id.MayExecute(exe); err != nil {
				r.warnings = append(r.warnings, warning{"binary_unreachable", fmt.Sprintf("workers start through baton's own binary: %v; install baton where %s can run it, such as /usr/local/bin", err, id.User)})
			}
		}
	}
	if p.controlGroup.set {
		gid, _, err := runas.LookupGroup(p.controlGroup.value)
		if err != nil {
			return r, fmt.Errorf("--control-group %s: %w", p.controlGroup.value, err)
		}
		r.control = append(r.control, control.Group(gid))
	}
	return r, nil
}

// apply hands w to the engine, which applies it at every start of a
// worker or hook.
func (w workerSetup) apply(o *upgrader.Options) {
	o.User, o.Environment, o.Umask = w.Identity, w.Env, nil
	if w.Umask >= 0 {
		mask := w.Umask
		o.Umask = &mask
	}
}

// optionalString is a string flag that knows whether it was given, so
// that an empty value ("--user $APP_USER" with the variable unset) is an
// error rather than the default.
type optionalString struct {
	value string
	set   bool
}

func (o *optionalString) String() string     { return o.value }
func (o *optionalString) Get() any           { return o.value }
func (o *optionalString) Set(v string) error { o.value, o.set = v, true; return nil }
