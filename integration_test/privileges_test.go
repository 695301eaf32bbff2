package integration_test

import (
	"encoding/json"
	"fmt"
	"io"
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
	if code != 0 || !strings.Contains(stdout, "serving      generation 2, 1 of 1 workers, ready") {
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

// Mistakes in who workers run as, and in their environment files, stop
// baton at start with one line: exit 2 for the command line, 3 for what
// the databases and files say.
func TestUserAndEnvMistakes(t *testing.T) {
	bin := harness.Build(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "app.env")
	if err := os.WriteFile(bad, []byte("# the app\nDATABASE_URL=postgres://db/app\nexport SECRET=x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A named pipe nobody writes to would block the start; /dev/zero
	// would fill memory; a value the kernel cannot pass would fail
	// every worker's exec with "argument list too long".
	fifo := filepath.Join(dir, "fifo.env")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	long := filepath.Join(dir, "long.env")
	if err := os.WriteFile(long, []byte("A=1\nCERT="+strings.Repeat("x", 200<<10)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--user", "baton-no-such-user"}, 3,
			"baton: --user baton-no-such-user: no such user in the password database: create it (useradd --system …) or name another\n"},
		{[]string{"--user="}, 2, "baton: --user is empty: want a user name or uid (baton --help lists every flag)\n"},
		{[]string{"--umask", "0999"}, 2, `baton: --umask "0999": want an octal mask from 0 to 0777, such as 027 (baton --help lists every flag)` + "\n"},
		{[]string{"--env", "SECRET"}, 2, `baton: --env "SECRET": want NAME=VALUE (baton --help lists every flag)` + "\n"},
		{[]string{"--env-file", bad}, 3,
			"baton: " + bad + `:3: "export SECRET" is not a variable name (letters, digits and _, not starting with a digit): drop "export", this is not a shell script` + "\n"},
		{[]string{"--env-file", filepath.Join(dir, "missing.env")}, 3,
			"baton: env file " + filepath.Join(dir, "missing.env") + " does not exist (--env-file -" + filepath.Join(dir, "missing.env") + " would make it optional)\n"},
		{[]string{"--env-file", fifo}, 3,
			"baton: env file " + fifo + " is a named pipe (FIFO), not a regular file: baton reads it anew for every generation, so give a file\n"},
		{[]string{"--env-file", "/dev/zero"}, 3,
			"baton: env file /dev/zero is a character device, not a regular file: baton reads it anew for every generation, so give a file\n"},
		{[]string{"--env-file", long}, 3,
			"baton: " + long + ":2: CERT is 204805 bytes; the kernel passes a variable of at most 131071\n"},
	} {
		args := append(tc.args, "--listen", "tcp://127.0.0.1:0", "--", bin.TestWorker)
		code, stdout, stderr := harness.Run(t, 20*time.Second, args...)
		if code != tc.code || stderr != tc.want {
			t.Errorf("baton %s: exit %d, stdout %q, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, stdout, stderr, tc.code, tc.want)
		}
	}
}

// A baton that is not root may say --user for the user it runs as (a
// unit or script shared with root installs): nothing changes. Another
// user is a start-up failure: only root can start workers as someone
// else.
func TestUserWhenNotRoot(t *testing.T) {
	needRoot(t)
	const nobody = 65534
	baton := batonForAll(t)
	code, stdout, stderr := runAs(t, nobody, nobody, nil, baton, "--user", "root", "--listen", "tcp://127.0.0.1:0", "--", "/bin/sleep", "30")
	want := "baton: baton runs as uid 65534, gid 65534, not as root, so it cannot start workers as root:root (uid 0, gid 0): start baton as root, or as that user without --user\n"
	if code != 3 || stderr != want {
		t.Errorf("nobody's baton --user root: exit %d, stdout %q, stderr %q; want exit 3 and %q", code, stdout, stderr, want)
	}

	for _, user := range []string{"nobody", "65534"} {
		master, served, exited := serveAs(t, nobody, baton, "--user", user, "--ready", "delay=100ms", "--dir", "/", "--", "/bin/sleep", "30")
		var worker int
		select {
		case worker = <-served:
		case err := <-exited:
			t.Fatalf("nobody's baton --user %s exited before generation 1 served: %v", user, err)
		case <-time.After(20 * time.Second):
			t.Fatalf("nobody's baton --user %s: generation 1 not serving within 20s", user)
		}
		if uid := procUID(t, worker); uid != nobody {
			t.Errorf("--user %s: the worker runs as uid %d, want %d", user, uid, nobody)
		}
		master.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("nobody's baton --user %s, stopped: %v, want exit 0", user, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("nobody's baton --user %s: still running 30s after TERM", user)
		}
	}
}

// serveAs starts the baton at bin with args and a JSON log, as uid and
// its group of the same number, in / (root's test directories are closed
// to it), and returns the master. served receives the PID of generation 1's worker once it
// serves; exited what Wait returns. The master is killed when the test
// ends, if still running.
func serveAs(t *testing.T, uid int, bin string, args ...string) (master *os.Process, served <-chan int, exited <-chan error) {
	t.Helper()
	id := strconv.Itoa(uid)
	cmd := exec.Command("setpriv", append([]string{"--reuid=" + id, "--regid=" + id, "--clear-groups", "--", bin, "--log-format", "json"}, args...)...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), harness.ProcessEnv...)
	log, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	servedc, exitedc := make(chan int, 1), make(chan error, 1)
	go func() {
		dec := json.NewDecoder(log)
		worker := 0
		for {
			var e harness.Event
			if dec.Decode(&e) != nil {
				break
			}
			switch {
			case e.Kind() == "worker_started" && e.Int("gen") == 1:
				worker = e.Int("pid")
			case e.Kind() == "reload_complete" && e.Int("gen") == 1:
				servedc <- worker
			}
		}
		io.Copy(io.Discard, log)
		exitedc <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd.Process, servedc, exitedc
}

// procUID is the real uid of process pid.
func procUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			uid, _ := strconv.Atoi(f[1])
			return uid
		}
	}
	t.Fatalf("no Uid: in /proc/%d/status", pid)
	return -1
}

// An env file that becomes a named pipe, or a link to a device, fails
// the reload that reads it at once, in one line naming it, instead of
// blocking the master on a pipe nobody writes or filling its memory with
// /dev/zero: the serving generation keeps serving, the master keeps
// answering, and the next reload with a file again succeeds.
func TestEnvFileThatIsNoFileFailsTheReload(t *testing.T) {
	bin := harness.Build(t)
	env := filepath.Join(t.TempDir(), "app.env")
	if err := os.WriteFile(env, []byte("GREETING=v1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--env-file", env, "--", bin.TestWorker)
	pid := b.WorkerPID(t, 1)
	for _, tc := range []struct {
		name, want string
		make       func() error
	}{
		{"a named pipe", " is a named pipe (FIFO), not a regular file", func() error { return syscall.Mkfifo(env, 0o600) }},
		{"a link to /dev/zero", " is a character device, not a regular file", func() error { return os.Symlink("/dev/zero", env) }},
	} {
		if err := os.Remove(env); err != nil {
			t.Fatal(err)
		}
		if err := tc.make(); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := b.ReloadWait(t, 20*time.Second)
		want := ": env file " + env + tc.want + ": baton reads it anew for every generation, so give a file; generation 1 is still serving\n"
		if code != 1 || stdout != "" || !strings.HasPrefix(stderr, "baton: reload failed: cannot start generation ") || !strings.HasSuffix(stderr, want) || strings.Count(stderr, "\n") != 1 {
			t.Fatalf("reload --wait with %s as the env file: exit %d, stdout %q, stderr %q; want exit 1 and one line naming it", tc.name, code, stdout, stderr)
		}
		if st := b.State(t); st.Generation != 1 || len(st.Workers) != 1 || st.Workers[0].PID != pid {
			t.Fatalf("after the failed reload with %s: %+v; want generation 1's worker %d serving", tc.name, st, pid)
		}
	}
	if err := os.Remove(env); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(env, []byte("GREETING=v2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := b.ReloadWait(t, 30*time.Second); code != 0 {
		t.Fatalf("reload --wait with a file again: exit %d, %q %q", code, stdout, stderr)
	}
}
