package runas

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// The test user and groups, made (once, idempotently) in the machine's
// databases: baton-test-worker, whose primary group is its own, a member
// of baton-test-extra.
const (
	testUser  = "baton-test-worker"
	testExtra = "baton-test-extra"
	testHome  = "/srv/baton-test-worker"
	testShell = "/bin/sh"
)

var addUsers sync.Once

// testIDs makes the test user and groups if they are missing and returns
// the user's uid, its primary gid and baton-test-extra's gid.
func testIDs(t *testing.T) (uid, gid, extra int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to add a test user")
	}
	var err error
	addUsers.Do(func() {
		for _, step := range [][]string{
			{"groupadd", "--system", "--force", testExtra},
			{"useradd", "--system", "--user-group", "--no-create-home", "--home-dir", testHome, "--shell", testShell, testUser},
			{"usermod", "--append", "--groups", testExtra, testUser},
		} {
			out, e := exec.Command(step[0], step[1:]...).CombinedOutput()
			// useradd exits 9 when the user exists already.
			var exit *exec.ExitError
			if e != nil && !(step[0] == "useradd" && errors.As(e, &exit) && exit.ExitCode() == 9) {
				err = errors.New(strings.Join(step, " ") + ": " + e.Error() + ": " + string(out))
				return
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	user := getent(t, "passwd", testUser)
	uid, _ = strconv.Atoi(user[2])
	gid, _ = strconv.Atoi(user[3])
	extra, _ = strconv.Atoi(getent(t, "group", testExtra)[2])
	return uid, gid, extra
}

// getent is the fields of name's entry in database.
func getent(t *testing.T, database, name string) []string {
	t.Helper()
	out, err := exec.Command("getent", database, name).Output()
	if err != nil {
		t.Fatalf("getent %s %s: %v", database, name, err)
	}
	return strings.Split(strings.TrimSpace(string(out)), ":")
}

// TestResolve walks --user and --group as root: names and numbers, the
// primary group by default, initgroups' supplementary groups, and the
// login variables systemd would set.
func TestResolve(t *testing.T) {
	uid, gid, extra := testIDs(t)
	root := self{uid: 0, gid: 0}
	for _, tc := range []struct {
		name        string
		user, group string
		want        *Identity
		err         string
	}{
		{name: "no --user", want: nil},
		{name: "by name", user: testUser,
			want: &Identity{User: testUser, UID: uid, Group: testUser, GID: gid, Groups: []int{gid, extra}, Home: testHome, Shell: testShell}},
		{name: "by uid", user: strconv.Itoa(uid),
			want: &Identity{User: testUser, UID: uid, Group: testUser, GID: gid, Groups: []int{gid, extra}, Home: testHome, Shell: testShell}},
		// initgroups(user, extra): the primary group, which lists no
		// members, is not among them.
		{name: "another group, which lists the user", user: testUser, group: testExtra,
			want: &Identity{User: testUser, UID: uid, Group: testExtra, GID: extra, Groups: []int{extra}, Home: testHome, Shell: testShell}},
		{name: "group by gid", user: testUser, group: strconv.Itoa(extra),
			want: &Identity{User: testUser, UID: uid, Group: testExtra, GID: extra, Groups: []int{extra}, Home: testHome, Shell: testShell}},
		{name: "a group the user is not in", user: testUser, group: "root",
			want: &Identity{User: testUser, UID: uid, Group: "root", GID: 0, Groups: []int{0, extra}, Home: testHome, Shell: testShell}},
		{name: "root", user: "root",
			want: &Identity{User: "root", UID: 0, Group: "root", GID: 0, Groups: []int{0}, Home: "/root", Shell: rootShell(t)}},
		{name: "root by uid", user: "0",
			want: &Identity{User: "root", UID: 0, Group: "root", GID: 0, Groups: []int{0}, Home: "/root", Shell: rootShell(t)}},
		// nobody's shell refuses logins: no SHELL, as with systemd.
		{name: "nobody", user: "nobody",
			want: &Identity{User: "nobody", UID: 65534, Group: groupName(t, 65534), GID: 65534, Groups: []int{65534}, Home: homeOf(t, "nobody"), Shell: ""}},

		{name: "--group alone", group: "root", err: `^--group needs --user: it is the group of the user workers run as$`},
		{name: "unknown user", user: "baton-no-such-user", err: `^--user baton-no-such-user: no such user in the password database: create it \(useradd --system …\) or name another$`},
		{name: "unknown uid", user: "3999999", err: `^--user 3999999: no such user in the password database`},
		{name: "the invalid uid is a name", user: "4294967295", err: `^--user 4294967295: no such user`},
		{name: "unknown group", user: "root", group: "baton-no-such-group", err: `^--group baton-no-such-group: no such group in the group database: create it \(groupadd --system …\) or name another$`},
		{name: "unknown gid", user: "root", group: "3999999", err: `^--group 3999999: no such group`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := resolve(root, tc.user, tc.group)
			check(t, id, err, tc.want, tc.err)
		})
	}
}

func check(t *testing.T, id *Identity, err error, want *Identity, wantErr string) {
	t.Helper()
	switch {
	case wantErr != "":
		if err == nil || !regexp.MustCompile(wantErr).MatchString(err.Error()) {
			t.Fatalf("got %+v, %v; want an error matching %s", id, err, wantErr)
		}
	case err != nil:
		t.Fatal(err)
	case want == nil && id != nil:
		t.Fatalf("got %#v, want nil: nothing changes", *id)
	case want != nil && id == nil:
		t.Fatalf("got nil, want %#v", *want)
	case want != nil && !equal(*id, *want):
		t.Fatalf("got %#v\nwant %#v", *id, *want)
	}
}

func equal(a, b Identity) bool {
	ga, gb := slices.Clone(a.Groups), slices.Clone(b.Groups)
	slices.Sort(ga)
	slices.Sort(gb)
	a.Groups, b.Groups = nil, nil
	return slices.Equal(ga, gb) && a.User == b.User && a.UID == b.UID && a.Group == b.Group && a.GID == b.GID && a.Home == b.Home && a.Shell == b.Shell
}

// rootShell is root's shell in the database, or /bin/sh where it has none.
func rootShell(t *testing.T) string {
	out, err := exec.Command("getent", "passwd", "root").Output()
	if err != nil {
		return "/bin/sh"
	}
	return cleanShell(strings.Split(strings.TrimSpace(string(out)), ":")[6])
}

func groupName(t *testing.T, gid int) string {
	out, err := exec.Command("getent", "group", strconv.Itoa(gid)).Output()
	if err != nil {
		return "nogroup"
	}
	return strings.Split(string(out), ":")[0]
}

func homeOf(t *testing.T, user string) string {
	out, err := exec.Command("getent", "passwd", user).Output()
	if err != nil {
		return ""
	}
	return cleanHome(strings.Split(string(out), ":")[5])
}

// TestResolveNotRoot: not running as root, --user naming baton's own
// user changes nothing; any other user or group is an error.
func TestResolveNotRoot(t *testing.T) {
	uid, gid, extra := testIDs(t)
	me := self{uid: uid, gid: gid}
	for _, tc := range []struct {
		name        string
		me          self
		user, group string
		err         string
	}{
		{name: "own name", me: me, user: testUser},
		{name: "own uid", me: me, user: strconv.Itoa(uid)},
		{name: "own name and group", me: me, user: testUser, group: testUser},
		{name: "own uid and gid", me: me, user: strconv.Itoa(uid), group: strconv.Itoa(gid)},
		{name: "own uid without a name", me: self{uid: 3999999, gid: 3999999}, user: "3999999"},
		{name: "own uid and gid without names", me: self{uid: 3999999, gid: 3999998}, user: "3999999", group: "3999998"},
		{name: "another user", me: me, user: "root",
			err: `^baton runs as uid ` + strconv.Itoa(uid) + `, gid ` + strconv.Itoa(gid) + `, not as root, so it cannot start workers as root:root \(uid 0, gid 0\): start baton as root, or as that user without --user$`},
		{name: "another group", me: me, user: testUser, group: testExtra, err: `cannot start workers as ` + testUser + `:` + testExtra + ` \(uid \d+, gid ` + strconv.Itoa(extra) + `\)`},
		{name: "another gid without a name", me: self{uid: 3999999, gid: 3999999}, user: "3999999", group: "3999998", err: `^--user 3999999: no such user`},
		{name: "unknown user", me: me, user: "baton-no-such-user", err: `^--user baton-no-such-user: no such user`},
		{name: "root without CAP_SETUID", me: self{canSwitch: errors.New("baton runs as root but without CAP_SETUID")}, user: testUser,
			err: `^cannot start workers as ` + testUser + `:` + testUser + ` \(uid \d+, gid \d+\): baton runs as root but without CAP_SETUID$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := resolve(tc.me, tc.user, tc.group)
			check(t, id, err, nil, tc.err)
		})
	}
}

// TestCanSwitch: this test runs as root with every capability, or not as
// root at all.
func TestCanSwitch(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if err := canSwitch(); err != nil {
		t.Fatal(err)
	}
	if current().canSwitch != nil || current().uid != 0 {
		t.Fatalf("current() = %+v", current())
	}
}

// TestStartAs starts a real process with the Credential and Env of the
// test user: it runs with that uid, gid and those groups, and sees the
// user's HOME, USER, LOGNAME and SHELL, none of the master's.
func TestStartAs(t *testing.T) {
	uid, gid, extra := testIDs(t)
	id, err := Resolve(testUser, "")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `grep -E '^(Uid|Gid|Groups):' /proc/self/status; echo "HOME=$HOME USER=$USER LOGNAME=$LOGNAME SHELL=$SHELL KEEP=$KEEP"`)
	cmd.Dir = "/"
	cmd.Env = id.Env([]string{"HOME=/root", "USER=root", "LOGNAME=root", "SHELL=/bin/bash", "KEEP=1", "PATH=/usr/bin:/bin"})
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: id.Credential()}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	u, g := strconv.Itoa(uid), strconv.Itoa(gid)
	groups := []string{g, strconv.Itoa(extra)}
	slices.SortFunc(groups, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
	want := strings.Join([]string{
		"Uid:\t" + u + "\t" + u + "\t" + u + "\t" + u,
		"Gid:\t" + g + "\t" + g + "\t" + g + "\t" + g,
		"Groups:\t" + strings.Join(groups, " ") + " ",
		"HOME=" + testHome + " USER=" + testUser + " LOGNAME=" + testUser + " SHELL=" + testShell + " KEEP=1",
	}, "\n") + "\n"
	if string(out) != want {
		t.Errorf("the process saw\n%s\nwant\n%s", out, want)
	}
}

func TestEnv(t *testing.T) {
	for _, tc := range []struct {
		id   Identity
		base []string
		want []string
	}{
		{Identity{User: "app", Home: "/srv/app", Shell: "/bin/bash"},
			[]string{"HOME=/root", "PATH=/bin", "USER=root", "LOGNAME=root", "SHELL=/bin/zsh", "X=1"},
			[]string{"PATH=/bin", "X=1", "USER=app", "LOGNAME=app", "HOME=/srv/app", "SHELL=/bin/bash"}},
		{Identity{User: "nobody"},
			[]string{"HOME=/root", "SHELL=/bin/bash", "PATH=/bin"},
			[]string{"PATH=/bin", "USER=nobody", "LOGNAME=nobody"}},
		{Identity{User: "app"}, nil, []string{"USER=app", "LOGNAME=app"}},
	} {
		if got := tc.id.Env(tc.base); !slices.Equal(got, tc.want) {
			t.Errorf("%+v.Env(%q) = %q, want %q", tc.id, tc.base, got, tc.want)
		}
	}
}

func TestCredential(t *testing.T) {
	id := Identity{UID: 33, GID: 34, Groups: []int{34, 100}}
	c := id.Credential()
	if c.Uid != 33 || c.Gid != 34 || !slices.Equal(c.Groups, []uint32{34, 100}) || c.NoSetGroups {
		t.Errorf("Credential() = %+v", c)
	}
	if c := (&Identity{UID: 1, GID: 1}).Credential(); c.Groups == nil || len(c.Groups) != 0 {
		t.Errorf("no groups: Credential().Groups = %#v, want empty (the master's are dropped)", c.Groups)
	}
}

// TestClean: HOME and SHELL as systemd's User= sets them, or not.
func TestClean(t *testing.T) {
	for home, want := range map[string]string{
		"/srv/app": "/srv/app", "/nonexistent": "/nonexistent", "/srv/./app": "/srv/./app",
		"": "", "/": "", "//": "", "/.": "", "relative": "", "/" + strings.Repeat("x", 5000): "",
	} {
		if got := cleanHome(home); got != want {
			t.Errorf("cleanHome(%q) = %q, want %q", home, got, want)
		}
	}
	for shell, want := range map[string]string{
		"/bin/bash": "/bin/bash", "/bin/sh": "/bin/sh", "/usr/bin/fish": "/usr/bin/fish",
		"": "", "bash": "", "/usr/sbin/nologin": "", "/sbin/nologin": "", "/bin/nologin": "", "/usr/bin/nologin": "",
		"/bin/false": "", "/usr/bin/false": "", "/bin/true": "", "/usr/bin/true": "", "/bin/sync": "/bin/sync",
	} {
		if got := cleanShell(shell); got != want {
			t.Errorf("cleanShell(%q) = %q, want %q", shell, got, want)
		}
	}
}

func TestParseID(t *testing.T) {
	for s, want := range map[string]int{"0": 0, "33": 33, "65534": 65534, "4294967294": 4294967294,
		"4294967295": -1, "65535": -1, "-1": -1, "": -1, "x": -1, "1x": -1, "0x10": -1, " 1": -1, "4294967296": -1} {
		got, ok := parseID(s)
		if !ok {
			got = -1
		}
		if got != want {
			t.Errorf("parseID(%q) = %d, %v; want %d", s, got, ok, want)
		}
	}
}

// TestMayExecute: a program is out of reach of a user when a directory
// on its way, or the program itself, does not let that user through.
func TestMayExecute(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files away")
	}
	// Under a directory anyone may pass, as /usr/local/bin is.
	top, err := os.MkdirTemp("", "runas-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(top)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(top, 0o755))
	mk := func(path string, mode os.FileMode, uid, gid int) string {
		t.Helper()
		path = filepath.Join(top, path)
		if mode.IsDir() {
			must(os.Mkdir(path, 0o700))
		} else {
			must(os.WriteFile(path, []byte("#!/bin/sh\n"), 0o700))
		}
		must(os.Chown(path, uid, gid))
		must(os.Chmod(path, mode.Perm()))
		return path
	}
	const app, appGroup, other = 64201, 64202, 64203
	id := &Identity{User: "app", UID: app, GID: appGroup, Groups: []int{appGroup, 64204}}
	mk("open", os.ModeDir|0o755, 0, 0)
	mk("private", os.ModeDir|0o700, 0, 0)
	mk("group", os.ModeDir|0o750, 0, appGroup)
	mk("supplementary", os.ModeDir|0o710, 0, 64204)
	mk("own", os.ModeDir|0o700, app, other)
	mk("notgroup", os.ModeDir|0o770, 0, other)
	for _, tc := range []struct {
		path string
		mode os.FileMode
		uid  int
		gid  int
		err  string // "" when app may run it
	}{
		{"open/prog", 0o755, 0, 0, ""},
		{"open/other-x", 0o701, 0, 0, ""},
		{"open/owner-only", 0o700, 0, 0, `it may not execute .*/open/owner-only \(mode 0700, owner 0:0\)$`},
		{"open/its-own", 0o700, app, other, ""},
		{"open/its-own-not-x", 0o070, app, appGroup, `may not execute`},
		{"open/group-x", 0o710, 0, appGroup, ""},
		{"open/supplementary-x", 0o710, 0, 64204, ""},
		{"open/other-group", 0o710, 0, other, `may not execute`},
		{"private/prog", 0o755, 0, 0, `it may not search .*/private \(mode 0700, owner 0:0\)$`},
		{"group/prog", 0o755, 0, 0, ""},
		{"supplementary/prog", 0o755, 0, 0, ""},
		{"own/prog", 0o755, 0, 0, ""},
		{"notgroup/prog", 0o755, 0, 0, `may not search .*/notgroup`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			path := mk(tc.path, tc.mode, tc.uid, tc.gid)
			err := id.MayExecute(path)
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("MayExecute: %v", err)
			case tc.err != "" && (err == nil || !regexp.MustCompile(`^`+regexp.QuoteMeta(path)+` is out of reach of app: .*`+tc.err).MatchString(err.Error())):
				t.Errorf("MayExecute = %v, want an error matching %s", err, tc.err)
			}
		})
	}
	// Root passes every directory, and runs what anyone may.
	root := &Identity{User: "root"}
	if err := root.MayExecute(filepath.Join(top, "private", "prog")); err != nil {
		t.Errorf("root: %v", err)
	}
	if err := root.MayExecute(mk("open/nobody-x", 0o644, 0, 0)); err == nil {
		t.Error("root may execute a file without an x bit")
	}
	// A link is followed: what counts is where the program is.
	link := filepath.Join(top, "open", "link")
	must(os.Symlink(filepath.Join(top, "private", "prog"), link))
	if err := id.MayExecute(link); err == nil || !strings.Contains(err.Error(), "may not search "+filepath.Join(top, "private")) {
		t.Errorf("through a link into a private directory: %v", err)
	}
}
