// Package runas owns who baton's workers and hooks run as: it resolves
// --user and --group from the password and group databases the way
// systemd resolves User= and Group=, and says what a process started as
// that user gets: its uid, gid and supplementary groups (initgroups(3)),
// and HOME, USER, LOGNAME and SHELL.
//
// Lookups go through os/user: the C library's name service switch (LDAP,
// sssd, systemd-userdb) in a cgo build, /etc/passwd and /etc/group in a
// static one (CGO_ENABLED=0, or the osusergo tag). Where the database has
// no entry for root or nobody, they are known anyway (0:0 with home /root,
// 65534:65534 with none), as systemd knows them, so that a bare container
// image can use them.
package runas

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Identity is a user and group that processes run as.
type Identity struct {
	// User is the name in the password database; UID its uid.
	User string
	UID  int
	// Group is the name of GID in the group database: --group's, or the
	// user's primary group.
	Group string
	GID   int
	// Groups are the supplementary groups as initgroups(User, GID) makes
	// them: every group that lists User as a member, and GID.
	Groups []int
	// Home and Shell are the user's from the password database, or empty
	// where systemd would not set HOME or SHELL: a home that is empty,
	// "/" or relative; a shell that is empty, relative, or one that
	// refuses logins (nologin, false, true).
	Home, Shell string
}

// String names the identity for a log line: "www-data:www-data (uid 33,
// gid 33)".
func (id *Identity) String() string {
	return fmt.Sprintf("%s:%s (uid %d, gid %d)", id.User, id.Group, id.UID, id.GID)
}

// Credential is what syscall.SysProcAttr.Credential needs to start a
// process as id: uid, gid and the supplementary groups, which replace the
// master's.
func (id *Identity) Credential() *syscall.Credential {
	c := &syscall.Credential{Uid: uint32(id.UID), Gid: uint32(id.GID), Groups: make([]uint32, len(id.Groups))}
	for i, g := range id.Groups {
		c.Groups[i] = uint32(g)
	}
	return c
}

// loginVars are the variables Env sets.
var loginVars = []string{"HOME", "USER", "LOGNAME", "SHELL"}

// Env returns base with HOME, USER, LOGNAME and SHELL set as systemd's
// User= sets them: USER and LOGNAME to id.User, HOME to id.Home and SHELL
// to id.Shell. Where id has no home or shell, the variable is left out:
// the master's own (root's) never reaches a process of another user.
// base is not modified.
func (id *Identity) Env(base []string) []string {
	env := make([]string, 0, len(base)+len(loginVars))
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		if !isLoginVar(name) {
			env = append(env, kv)
		}
	}
	env = append(env, "USER="+id.User, "LOGNAME="+id.User)
	if id.Home != "" {
		env = append(env, "HOME="+id.Home)
	}
	if id.Shell != "" {
		env = append(env, "SHELL="+id.Shell)
	}
	return env
}

func isLoginVar(name string) bool {
	for _, v := range loginVars {
		if name == v {
			return true
		}
	}
	return false
}

// Resolve returns who workers run as for --user userArg and --group
// groupArg (empty: the user's primary group), as names or numeric ids. A
// user or group must exist in its database; a numeric id is looked up
// too, and its name used.
//
// It returns nil, and no error, when nothing is to change: userArg is
// empty, or baton does not run as root and userArg (and groupArg, if
// given) is what it runs as. Not running as root, it returns an error for
// any other user or group: only root can start processes as someone else.
// Running as root without CAP_SETUID and CAP_SETGID (a container started
// with them dropped) is an error too. Every error is one line.
func Resolve(userArg, groupArg string) (*Identity, error) {
	return resolve(current(), userArg, groupArg)
}

// self is the process that asks: its effective uid and gid, and whether
// it may switch to others.
type self struct {
	uid, gid  int
	canSwitch error // nil when it holds CAP_SETUID and CAP_SETGID
}

func current() self {
	return self{uid: os.Geteuid(), gid: os.Getegid(), canSwitch: canSwitch()}
}

func resolve(me self, userArg, groupArg string) (*Identity, error) {
	switch {
	case userArg == "" && groupArg == "":
		return nil, nil
	case userArg == "":
		return nil, errors.New("--group needs --user: it is the group of the user workers run as")
	}
	if me.uid != 0 {
		// Its own ids need no database: a container may run baton as a
		// uid that has no name.
		if uid, ok := parseID(userArg); ok && uid == me.uid {
			if gid, ok := parseID(groupArg); groupArg == "" || ok && gid == me.gid {
				return nil, nil
			}
		}
	}
	id, err := lookup(userArg, groupArg)
	if err != nil {
		return nil, err
	}
	if me.uid != 0 {
		if id.UID == me.uid && (groupArg == "" || id.GID == me.gid) {
			return nil, nil
		}
		return nil, fmt.Errorf("baton runs as uid %d, gid %d, not as root, so it cannot start workers as %s: start baton as root, or as that user without --user", me.uid, me.gid, id)
	}
	if me.canSwitch != nil {
		return nil, fmt.Errorf("cannot start workers as %s: %v", id, me.canSwitch)
	}
	return id, nil
}

// canSwitch reports whether this process may set its uid, gid and groups
// to any others.
func canSwitch() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("cannot read baton's capabilities: %w", err)
	}
	var missing []string
	if data[0].Effective&(1<<unix.CAP_SETUID) == 0 {
		missing = append(missing, "CAP_SETUID")
	}
	if data[0].Effective&(1<<unix.CAP_SETGID) == 0 {
		missing = append(missing, "CAP_SETGID")
	}
	if missing != nil {
		return fmt.Errorf("baton runs as root but without %s (give them back, e.g. docker run --cap-add)", strings.Join(missing, " and "))
	}
	return nil
}

// parseID reads a numeric uid or gid as systemd does: decimal, not the
// invalid (uid_t)-1 nor its 16-bit form.
func parseID(s string) (int, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == math.MaxUint32 || n == math.MaxUint16 {
		return 0, false
	}
	return int(n), true
}

// lookup resolves userArg and groupArg in the databases.
func lookup(userArg, groupArg string) (*Identity, error) {
	u, err := lookupUser(userArg)
	if err != nil {
		return nil, err
	}
	id := &Identity{User: u.Username}
	id.UID, _ = strconv.Atoi(u.Uid)
	id.GID, _ = strconv.Atoi(u.Gid)
	if groupArg != "" {
		if id.GID, id.Group, err = LookupGroup(groupArg); err != nil {
			return nil, fmt.Errorf("--group %s: %w", groupArg, err)
		}
	} else if _, id.Group, err = LookupGroup(u.Gid); err != nil {
		// systemd starts such a user's services all the same.
		id.Group = u.Gid
	}
	if id.Groups, err = initgroups(u, id.GID); err != nil {
		return nil, fmt.Errorf("--user %s: supplementary groups: %w", userArg, err)
	}
	id.Home = cleanHome(u.HomeDir)
	shell, err := lookupShell(u.Username)
	if err != nil {
		return nil, fmt.Errorf("--user %s: login shell: %w", userArg, err)
	}
	if u.Uid == "0" && shell == "" {
		shell = "/bin/sh"
	}
	id.Shell = cleanShell(shell)
	return id, nil
}

// lookupUser finds a user by name or, for a number, by uid.
func lookupUser(s string) (*user.User, error) {
	var u *user.User
	var err error
	if uid, ok := parseID(s); ok {
		u, err = user.LookupId(strconv.Itoa(uid))
	} else {
		u, err = user.Lookup(s)
	}
	var unknownName user.UnknownUserError
	var unknownID user.UnknownUserIdError
	switch {
	case err == nil:
		return u, nil
	case errors.As(err, &unknownName), errors.As(err, &unknownID), errors.Is(err, fs.ErrNotExist):
		if u := wellKnownUser(s); u != nil {
			return u, nil
		}
		return nil, fmt.Errorf("--user %s: no such user in the password database: create it (useradd --system …) or name another", s)
	}
	return nil, fmt.Errorf("--user %s: %w", s, err)
}

// wellKnownUser is root or nobody, which systemd knows without a
// database entry.
func wellKnownUser(s string) *user.User {
	switch s {
	case "root", "0":
		return &user.User{Username: "root", Uid: "0", Gid: "0", HomeDir: "/root"}
	case "nobody", "65534":
		return &user.User{Username: "nobody", Uid: "65534", Gid: "65534"}
	}
	return nil
}

// LookupGroup finds a group by name or, for a number, by gid, and
// returns its gid and name. The error is one line; the caller names the
// flag.
func LookupGroup(s string) (gid int, name string, err error) {
	var g *user.Group
	if n, ok := parseID(s); ok {
		g, err = user.LookupGroupId(strconv.Itoa(n))
	} else {
		g, err = user.LookupGroup(s)
	}
	var unknownName user.UnknownGroupError
	var unknownID user.UnknownGroupIdError
	switch {
	case err == nil:
		gid, _ = strconv.Atoi(g.Gid)
		return gid, g.Name, nil
	case errors.As(err, &unknownName), errors.As(err, &unknownID), errors.Is(err, fs.ErrNotExist):
		switch s {
		case "root", "0":
			return 0, "root", nil
		case "nogroup", "nobody", "65534":
			return 65534, "nogroup", nil
		}
		return 0, "", errors.New("no such group in the group database: create it (groupadd --system …) or name another")
	}
	return 0, "", err
}

// initgroups returns the supplementary groups initgroups(3) would give u
// with gid as its group: the groups that list u as a member, and gid
// (u's primary group only if it is gid or lists u).
func initgroups(u *user.User, gid int) ([]int, error) {
	withGID := *u
	withGID.Gid = strconv.Itoa(gid)
	ids, err := withGID.GroupIds()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	groups := []int{gid}
	for _, s := range ids {
		g, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Errorf("group id %q: %w", s, err)
		}
		if !contains(groups, g) {
			groups = append(groups, g)
		}
	}
	return groups, nil
}

func contains(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// cleanHome is home as systemd's User= gives it, or "" where it sets no
// HOME.
func cleanHome(home string) string {
	if home == "" || !filepath.IsAbs(home) || filepath.Clean(home) == "/" || len(home) >= unix.PathMax {
		return ""
	}
	return home
}

// nologinShells refuse logins; systemd sets no SHELL for them.
var nologinShells = []string{
	"/bin/nologin", "/sbin/nologin", "/usr/bin/nologin", "/usr/sbin/nologin",
	"/bin/false", "/usr/bin/false", "/bin/true", "/usr/bin/true",
}

// cleanShell is shell as systemd's User= gives it, or "" where it sets
// no SHELL.
func cleanShell(shell string) string {
	if shell == "" || !filepath.IsAbs(shell) || len(shell) >= unix.PathMax {
		return ""
	}
	for _, n := range nologinShells {
		if filepath.Clean(shell) == n {
			return ""
		}
	}
	return shell
}

// MayExecute reports, as one line, why id could not execute the program
// at path: a directory on the way that it may not search, or a file that
// it may not execute. It reads the permission bits, as the kernel does
// for a process without privileges; access control lists are not read,
// so a nil answer is certain and an error is very likely right.
func (id *Identity) MayExecute(path string) error {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return err
	}
	for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
		if err := id.may(dir, 1, "search"); err != nil {
			return fmt.Errorf("%s is out of reach of %s: %w", path, id.User, err)
		}
		if dir == "/" {
			break
		}
	}
	if err := id.may(real, 1, "execute"); err != nil {
		return fmt.Errorf("%s is out of reach of %s: %w", path, id.User, err)
	}
	return nil
}

// may checks the permission bit (1 execute or search, 2 write, 4 read)
// of id on the file at path.
func (id *Identity) may(path string, bit uint32, what string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	mode := uint32(fi.Mode().Perm())
	allowed := false
	switch {
	case id.UID == 0:
		// Root searches any directory and executes a file that anyone may.
		allowed = fi.IsDir() || mode&(bit|bit<<3|bit<<6) != 0
	case int(st.Uid) == id.UID:
		allowed = mode&(bit<<6) != 0
	case int(st.Gid) == id.GID || contains(id.Groups, int(st.Gid)):
		allowed = mode&(bit<<3) != 0
	default:
		allowed = mode&bit != 0
	}
	if !allowed {
		return fmt.Errorf("it may not %s %s (mode %04o, owner %d:%d)", what, path, mode, st.Uid, st.Gid)
	}
	return nil
}
