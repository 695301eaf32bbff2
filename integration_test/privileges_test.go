package integration_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/internal/harness"
)

// The deploy group of these tests, made once (idempotently) in the
// machine's group database. Users need no names: setpriv runs the
// clients as bare uids.
const deployGroup = "baton-test-deploy"

const (
	deployUID   = 64501 // a member of deployGroup
	strangerUID = 64502 // in no group of baton's
)

// needRoot skips a test that must give files away and run programs as
// other users.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run programs as other users")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux) to run programs as other users")
	}
}

// groupID adds group to the group database unless it is there, and
// returns its gid.
func groupID(t *testing.T, group string) int {
	t.Helper()
	if out, err := exec.Command("groupadd", "--system", "--force", group).CombinedOutput(); err != nil {
		t.Fatalf("groupadd %s: %v: %s", group, err, out)
	}
	out, err := exec.Command("getent", "group", group).Output()
	if err != nil {
		t.Fatalf("getent group %s: %v", group, err)
	}
	gid, err := strconv.Atoi(strings.Split(string(out), ":")[2])
	if err != nil {
		t.Fatalf("getent group %s: %q", group, out)
	}
	return gid
}

// openDir makes dir and its parent passable by anyone, as /run/app and
// /run are: a test's TempDir is root's alone.
func openDir(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// batonForAll is a copy of the baton binary that any user may run, as
// one in /usr/local/bin: the built one is in a directory of root's.
func batonForAll(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "baton-for-all-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "baton")
	if err := copyFile(harness.Build(t).Baton, path, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// runAs runs the baton at bin with args as uid, whose only group is gid
// and whose supplementary groups are groups (setpriv without a password
// database entry), and returns its exit code and output.
func runAs(t *testing.T, uid, gid int, groups []int, bin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	priv := []string{"--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(gid), "--clear-groups"}
	if len(groups) > 0 {
		ids := make([]string, len(groups))
		for i, g := range groups {
			ids[i] = strconv.Itoa(g)
		}
		priv[2] = "--groups=" + strings.Join(ids, ",")
	}
	return harness.RunProgram(t, 30*time.Second, "setpriv", append(append(priv, "--", bin), args...)...)
}

// A deploy user who is not root reloads the app that a root baton runs,
// and reads its status, because baton opened its control socket to the
// deploy group; another user can do neither, and is told what to do.
func TestControlGroupLetsADeployUserReload(t *testing.T) {
	needRoot(t)
	gid := groupID(t, deployGroup)
	bin := harness.Build(t)
	app := filepath.Join(t.TempDir(), "app")
	harness.Deploy(t, app, bin.TestWorker)
	b := harness.Start(t, "--control-group", deployGroup, "--listen", "http=tcp://127.0.0.1:0", "--", app)

	sock := control.DefaultPath(b.PIDFile)
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode() != os.ModeSocket|0o660 || int(fi.Sys().(*syscall.Stat_t).Gid) != gid {
		t.Fatalf("control socket %s: %v, %v; want mode 0660 and group %s (%d)", sock, fi.Mode(), err, deployGroup, gid)
	}
	openDir(t, b.Dir)
	baton := batonForAll(t)

	code, stdout, stderr := runAs(t, deployUID, deployUID, []int{gid}, baton, "reload", "--wait", "--pidfile", b.PIDFile)
	if code != 0 || !strings.HasPrefix(stdout, "reloaded: generation 2 serving after ") {
		t.Fatalf("the deploy user's reload --wait: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = runAs(t, deployUID, deployUID, []int{gid}, baton, "status", "--pidfile", b.PIDFile)
	if code != 0 || !strings.Contains(stdout, "serving      generation 2, pid ") {
		t.Fatalf("the deploy user's status: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	want := "baton: no permission to use the control socket " + sock + ": " + control.PermissionHint + "\n"
	for _, args := range [][]string{
		{"status", "--pidfile", b.PIDFile},
		{"reload", "--wait", "--pidfile", b.PIDFile},
		{"reload", "--pidfile", b.PIDFile},
		{"status", "--control", sock},
	} {
		code, stdout, stderr := runAs(t, strangerUID, strangerUID, nil, baton, args...)
		if code != 1 || stdout != "" || stderr != want {
			t.Errorf("a stranger's baton %s: exit %d, stdout %q, stderr %q; want exit 1 and %q", strings.Join(args, " "), code, stdout, stderr, want)
		}
	}
	if st := b.State(t); st.Generation != 2 {
		t.Errorf("generation %d serves after the stranger's reloads, want 2: they must not reach the master", st.Generation)
	}

	// Without --control-group the socket is baton's user's alone.
	plain := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--", app)
	openDir(t, plain.Dir)
	code, _, stderr = runAs(t, deployUID, deployUID, []int{gid}, baton, "status", "--pidfile", plain.PIDFile)
	if code != 1 || !strings.Contains(stderr, control.PermissionHint) {
		t.Errorf("the deploy user's status of a baton without --control-group: exit %d, %q", code, stderr)
	}
}

// A --control-group that the group database does not know is a start-up
// failure, said in one line; one without a control socket is a usage
// error.
func TestControlGroupMistakes(t *testing.T) {
	bin := harness.Build(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--pidfile", filepath.Join(t.TempDir(), "app.pid"), "--control-group", "baton-no-such-group"}, 3,
			"baton: --control-group baton-no-such-group: no such group in the group database: create it (groupadd --system …) or name another\n"},
		{[]string{"--control-group", "root"}, 2,
			"baton: --control-group needs a control socket: give --pidfile PATH or --control PATH (baton --help lists every flag)\n"},
		{[]string{"--pidfile", filepath.Join(t.TempDir(), "app.pid"), "--control-group="}, 2,
			"baton: --control-group is empty: want a group name or gid (baton --help lists every flag)\n"},
	} {
		args := append(tc.args, "--listen", "tcp://127.0.0.1:0", "--", bin.TestWorker)
		code, stdout, stderr := harness.Run(t, 20*time.Second, args...)
		if code != tc.code || stderr != tc.want {
			t.Errorf("baton %s: exit %d, stdout %q, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, stdout, stderr, tc.code, tc.want)
		}
	}
}
