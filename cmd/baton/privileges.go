package main

import (
	"flag"
	"fmt"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/internal/runas"
)

// privilegeFlags are the master's flags about who may do what.
type privilegeFlags struct {
	controlGroup optionalString
}

func (p *privilegeFlags) define(fs *flag.FlagSet) {
	fs.Var(&p.controlGroup, "control-group", "open the control socket to `GROUP` (a name or gid): mode 0660 and that group, so its members may baton reload and baton status (default: mode 0600, for baton's own user)")
}

// check finds the usage errors in the flags; hasControl says whether
// the master has a control socket.
func (p *privilegeFlags) check(hasControl bool) error {
	if p.controlGroup.set {
		switch {
		case p.controlGroup.value == "":
			return usagef("--control-group is empty: want a group name or gid")
		case !hasControl:
			return usagef("--control-group needs a control socket: give --pidfile PATH or --control PATH")
		}
	}
	return nil
}

// privileges are the flags resolved against the user and group
// databases.
type privileges struct {
	// control are the options of the control socket.
	control []control.Option
}

// resolve looks the flags up; its errors are start-up failures.
func (p *privilegeFlags) resolve() (privileges, error) {
	var r privileges
	if p.controlGroup.set {
		gid, _, err := runas.LookupGroup(p.controlGroup.value)
		if err != nil {
			return r, fmt.Errorf("--control-group %s: %w", p.controlGroup.value, err)
		}
		r.control = append(r.control, control.Group(gid))
	}
	return r, nil
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
