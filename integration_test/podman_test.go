package integration_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/internal/loadgen"
	"github.com/baton-sh/baton/upgrader"
)

// baton as PID 1 of a real container run by podman: the image holds
// nothing but baton and the test worker, built static, and busybox for
// the worker's shell; the runtime's own signals and commands drive it
// (podman kill, podman exec, podman stop), and the load comes through a
// published port. docs/containers-podman.md says what this proves.

// podmanImageName is the repository of the test image; its tag is a hash
// of its content, so an image already imported is used as it is.
const podmanImageName = "localhost/baton-test"

var podmanSetup struct {
	once  sync.Once
	image string
	skip  string // why containers cannot run here, if they cannot
	err   error
}

// podmanNeed returns the test image, imported once per test process,
// skipping the test (saying why) where podman cannot run a container at
// all, and failing it if the image cannot be made.
func podmanNeed(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("running containers with podman needs root here (a rootless podman needs subuid ranges and a user session)")
	}
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed (Debian packages podman and runc; scripts/test installs them)")
	}
	podmanSetup.once.Do(func() {
		podmanSetup.image, podmanSetup.err = podmanImport(t)
		if podmanSetup.err != nil {
			return
		}
		// Whether this machine runs containers at all.
		probe := append(append([]string{"run", "--rm"}, podmanRunFlags()...), podmanSetup.image, "/bin/baton", "version")
		out, err := exec.Command("podman", probe...).CombinedOutput()
		if err != nil {
			podmanSetup.skip = fmt.Sprintf("podman cannot run a container here: %v: %s", err, bytes.TrimSpace(out))
		}
	})
	if podmanSetup.err != nil {
		t.Fatal(podmanSetup.err)
	}
	if podmanSetup.skip != "" {
		t.Skip(podmanSetup.skip)
	}
	return podmanSetup.image
}

// podmanImport makes the image's root filesystem as a tar archive and
// imports it, unless an image with its content is there already; images of
// other content more than an hour old are removed.
func podmanImport(t *testing.T) (string, error) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return "", fmt.Errorf("busybox is not installed (Debian package busybox-static): the test image's shell")
	}
	files := []struct{ path, src string }{
		{"bin/baton", harness.BuildStatic(t, "./cmd/baton")},
		{"bin/testworker", harness.BuildStatic(t, "./cmd/testworker")},
		{"bin/busybox", busybox},
	}
	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	for _, d := range []struct {
		name string
		mode int64
	}{{"bin", 0o755}, {"dev", 0o755}, {"etc", 0o755}, {"proc", 0o555}, {"run", 0o755}, {"srv", 0o755}, {"sys", 0o555}, {"tmp", 0o1777}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name + "/", Mode: d.mode}); err != nil {
			return "", err
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f.src)
		if err != nil {
			return "", err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.path, Mode: 0o755, Size: int64(len(b))}); err != nil {
			return "", err
		}
		if _, err := tw.Write(b); err != nil {
			return "", err
		}
	}
	// sh for the worker's -orphan helper, sleep as that helper.
	for _, l := range []string{"sh", "sleep"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + l, Linkname: "busybox", Mode: 0o777}); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	sum := sha256.Sum256(archive.Bytes())
	image := podmanImageName + ":" + hex.EncodeToString(sum[:8])
	if exec.Command("podman", "image", "exists", image).Run() == nil {
		return image, nil
	}
	path := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(path, archive.Bytes(), 0o644); err != nil {
		return "", err
	}
	if out, err := exec.Command("podman", "import", "--quiet", path, image).CombinedOutput(); err != nil {
		return "", fmt.Errorf("podman import: %v: %s", err, out)
	}
	// Images of older content, once an hour old: another checkout's test
	// run may have just imported one and be about to use it. One still in
	// use is left alone.
	out, _ := exec.Command("podman", "images", "--filter", "reference="+podmanImageName, "--filter", "until=1h",
		"--format", "{{.Repository}}:{{.Tag}}").Output()
	for _, old := range strings.Fields(string(out)) {
		if old != image {
			exec.Command("podman", "rmi", old).Run()
		}
	}
	return image, nil
}

// podmanRunFlags are what every container of these tests needs on these
// machines: runc where it is installed (crun cannot set up the cgroups of
// some hosts), and resource limits within the host's own, since podman's
// defaults (1048576 descriptors) are above what the runtime may set.
func podmanRunFlags() []string {
	var flags []string
	if _, err := exec.LookPath("runc"); err == nil {
		flags = append(flags, "--runtime", "runc")
	}
	var nofile, nproc unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile)
	unix.Getrlimit(unix.RLIMIT_NPROC, &nproc)
	n := min(nofile.Cur, 65536)
	p := min(nproc.Cur, 4096)
	return append(flags, "--ulimit", fmt.Sprintf("nofile=%d:%d", n, n), "--ulimit", fmt.Sprintf("nproc=%d:%d", p, p))
}

var podmanSeq atomic.Int64

// container is a container whose PID 1 is baton, run in the foreground
// by `podman run`, its log followed through podman's stderr.
type container struct {
	*harness.Baton
	name string
}

// podmanRun runs baton as the container's entrypoint with batonArgs
// (flags, "--" and the worker command, paths inside the container),
// publishing ports (container ports such as "8080") on loopback, with
// extra podman run flags; it returns once the first generation serves.
// The container is removed when the test ends.
func podmanRun(t *testing.T, extra []string, batonArgs ...string) *container {
	t.Helper()
	image := podmanNeed(t)
	name := fmt.Sprintf("baton-test-%d-%d", os.Getpid(), podmanSeq.Add(1))
	// Registered first, so it runs last: after the harness has stopped
	// the run, whatever is left of the container goes.
	t.Cleanup(func() { exec.Command("podman", "rm", "--force", "--time", "0", name).Run() })
	cmd := append([]string{"podman", "run", "--rm", "--name", name}, podmanRunFlags()...)
	cmd = append(append(cmd, extra...), image, "/bin/baton")
	b := harness.StartWith(t, harness.Setup{Command: cmd}, batonArgs...)
	b.WaitFor(t, 60*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" && e.Int("gen") >= 1 })
	return &container{Baton: b, name: name}
}

// podman runs a podman command on the container and returns its exit
// code and combined output, failing the test if it cannot run or takes
// longer than d.
func (c *container) podman(t *testing.T, d time.Duration, args ...string) (int, string) {
	t.Helper()
	code, stdout, stderr := harness.RunProgram(t, d, "podman", args...)
	return code, stdout + stderr
}

// port is the loopback address published for the container's port.
func (c *container) port(t *testing.T, port string) string {
	t.Helper()
	code, out := c.podman(t, 30*time.Second, "port", c.name, port)
	if code != 0 {
		t.Fatalf("podman port %s %s: exit %d: %s", c.name, port, code, out)
	}
	addr := strings.TrimSpace(strings.Split(strings.TrimSpace(out), "\n")[0])
	if i := strings.LastIndex(addr, " "); i >= 0 { // "8080/tcp -> 127.0.0.1:N" on some versions
		addr = addr[i+1:]
	}
	return addr
}

// hostPID is the PID, on this side of the container's PID namespace, of
// its PID 1.
func (c *container) hostPID(t *testing.T) int {
	t.Helper()
	code, out := c.podman(t, 30*time.Second, "inspect", "--format", "{{.State.Pid}}", c.name)
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if code != 0 || err != nil || pid <= 0 {
		t.Fatalf("podman inspect %s: exit %d: %s", c.name, code, out)
	}
	return pid
}

// requirePID1 fails the test unless pid is baton, PID 1 in its own PID
// namespace.
func requirePID1(t *testing.T, pid int) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var nspid []string
	for _, line := range strings.Split(string(status), "\n") {
		if f, ok := strings.CutPrefix(line, "NSpid:"); ok {
			nspid = strings.Fields(f)
		}
	}
	if p, _ := harness.ReadProc(pid); p.Comm != "baton" || len(nspid) < 2 || nspid[len(nspid)-1] != "1" {
		t.Fatalf("the container's first process is %q with NSpid %v: want baton as PID 1", p.Comm, nspid)
	}
}

// status is `baton status --json` run in the container by podman exec,
// as user (a name or uid:gid inside the container, "" for root), for a
// baton started with --pidfile /tmp/baton.pid.
func (c *container) status(t *testing.T, user string) upgrader.Status {
	t.Helper()
	args := []string{"exec"}
	if user != "" {
		args = append(args, "--user", user)
	}
	args = append(args, c.name, "/bin/baton", "status", "--json", "--pidfile", "/tmp/baton.pid")
	code, stdout, stderr := harness.RunProgram(t, 30*time.Second, "podman", args...)
	var st upgrader.Status
	if err := json.Unmarshal([]byte(stdout), &st); code != 0 || err != nil {
		t.Fatalf("podman exec … baton status --json: exit %d, %v: %s%s", code, err, stdout, stderr)
	}
	return st
}

// waitFleet waits until `baton status --json`, run in the container as
// user, shows n workers of generation gen serving and nothing else, and
// returns that status.
func (c *container) waitFleet(t *testing.T, user string, n, gen int) upgrader.Status {
	t.Helper()
	var st upgrader.Status
	defer func() {
		if t.Failed() {
			t.Logf("the last status: %+v", st.Workers)
		}
	}()
	harness.Eventually(t, 30*time.Second, fmt.Sprintf("%d workers of generation %d serving", n, gen), func() bool {
		st = c.status(t, user)
		ok := len(st.Workers) == n
		for _, w := range st.Workers {
			ok = ok && w.State == "serving" && w.Generation == gen
		}
		return ok
	})
	return st
}

// Four workers behind PID 1: each `podman kill --signal HUP` replaces all
// four under load, with a request in flight on one of them answered.
func TestPodmanReloadUnderLoad(t *testing.T) {
	c := podmanRun(t, []string{"-p", "127.0.0.1::8080"},
		"--pidfile", "/tmp/baton.pid", "--workers", "4", "--listen", "http=tcp://0.0.0.0:8080", "--", "/bin/testworker")
	requirePID1(t, c.hostPID(t))
	url := "http://" + c.port(t, "8080")
	load, err := loadgen.Start(loadgen.Config{URL: url + "/", NewConns: 4, KeepAlive: 4, PostBody: []byte("podman"), MaxDuration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { load.Stop() })
	harness.Eventually(t, 10*time.Second, "load under way", func() bool { return load.Done() >= 200 })
	for gen := 2; gen <= 4; gen++ {
		slow := c.InFlight(t, url, time.Second)
		if code, out := c.podman(t, 30*time.Second, "kill", "--signal", "HUP", c.name); code != 0 {
			t.Fatalf("podman kill --signal HUP: exit %d: %s", code, out)
		}
		end := c.WaitFor(t, 60*time.Second, func(e harness.Event) bool {
			return (e.Kind() == "reload_complete" || e.Kind() == "reload_failed") && e.Int("gen") >= gen
		})
		if end.Kind() != "reload_complete" || end.Int("gen") != gen {
			t.Fatalf("podman kill --signal HUP: %v", end)
		}
		if a := <-slow; a.Err != nil || !strings.Contains(a.Body, "slow done") {
			t.Fatalf("reload to generation %d: the request in flight: %q, %v", gen, a.Body, a.Err)
		}
		if st := c.waitFleet(t, "", 4, gen); st.PID != 1 {
			t.Fatalf("reload to generation %d: baton status says the master is pid %d, want 1", gen, st.PID)
		}
		before := load.Done()
		harness.Eventually(t, 20*time.Second, "requests flowing after the reload", func() bool { return load.Done() >= before+100 })
	}
	sum := requireNoFailures(t, load)
	if len(sum.PIDs) < 8 {
		t.Errorf("answers came from %d worker pids, want at least 8 of the 16 the four generations ran", len(sum.PIDs))
	}
}

// A deploy user in the container: workers run as nobody, the control
// socket is nogroup's, and `podman exec --user 65534:65534 … baton reload
// --wait` says how each reload ended. Then root copies a newer baton into
// the running container and `baton upgrade --wait` puts it in place: the
// same PID 1, the same workers, the container never restarted.
func TestPodmanReloadWait(t *testing.T) {
	// The release directory is mounted; a file in it makes the next
	// worker fail at start, as a broken release would.
	srv := t.TempDir()
	if err := os.Chmod(srv, 0o755); err != nil { // nobody's workers look in it
		t.Fatal(err)
	}
	c := podmanRun(t, []string{"-p", "127.0.0.1::8080", "-v", srv + ":/srv"},
		"--pidfile", "/tmp/baton.pid", "--user", "nobody", "--control-group", "nogroup", "--workers", "2",
		"--listen", "http=tcp://0.0.0.0:8080", "--", "/bin/testworker", "-fail-if-exists", "/srv/broken")
	url := "http://" + c.port(t, "8080") + "/"
	const deployer = "65534:65534"
	reload := []string{"exec", "--user", deployer, c.name, "/bin/baton", "reload", "--wait", "--pidfile", "/tmp/baton.pid"}

	if code, out := c.podman(t, 60*time.Second, reload...); code != 0 || !strings.Contains(get(t, url), "gen=2") {
		t.Fatalf("podman exec --user %s … baton reload --wait: exit %d, want 0 and generation 2 serving: %s", deployer, code, out)
	}
	pid1 := c.hostPID(t)
	for _, p := range harness.ProcsWhere(func(p harness.Proc) bool { return p.PPID == pid1 && p.Comm == "testworker" }) {
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
		if !regexp.MustCompile(`(?m)^Uid:\s+65534\s`).Match(status) {
			t.Fatalf("worker %d does not run as nobody (65534):\n%s", p.PID, status)
		}
	}
	if err := os.WriteFile(filepath.Join(srv, "broken"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := c.podman(t, 60*time.Second, reload...); code != 1 {
		t.Fatalf("podman exec … baton reload --wait of a failing release: exit %d, want 1: %s", code, out)
	}
	if body := get(t, url); !strings.Contains(body, "gen=2") {
		t.Fatalf("after the failed reload: %q, want generation 2 still serving", body)
	}
	os.Remove(filepath.Join(srv, "broken"))
	if code, out := c.podman(t, 60*time.Second, reload...); code != 0 || !strings.Contains(get(t, url), "gen=4") {
		t.Fatalf("podman exec … baton reload --wait of a fixed release: exit %d, want 0 and generation 4 serving: %s", code, out)
	}

	// A newer baton copied over the running one, under load.
	before := c.waitFleet(t, deployer, 2, 4)
	load := startLoad(t, url)
	if code, out := c.podman(t, 30*time.Second, "cp", harness.BuildStaticBaton(t, "upgrade-new"), c.name+":/bin/baton"); code != 0 {
		t.Fatalf("podman cp of a new baton: exit %d: %s", code, out)
	}
	code, out := c.podman(t, 60*time.Second, "exec", c.name, "/bin/baton", "upgrade", "--wait", "--pidfile", "/tmp/baton.pid")
	if code != 0 || !strings.Contains(out, "upgrade-new") {
		t.Fatalf("podman exec … baton upgrade --wait: exit %d, want 0 and the new version: %s", code, out)
	}
	after := c.status(t, deployer)
	if c.hostPID(t) != pid1 || after.PID != 1 || !strings.Contains(after.Version, "upgrade-new") ||
		fmt.Sprint(workerPIDs(after)) != fmt.Sprint(workerPIDs(before)) {
		t.Fatalf("after the upgrade: pid %d (host pid %d, was %d), version %q, workers %v (were %v); want PID 1 unchanged, the new version, the same workers",
			after.PID, c.hostPID(t), pid1, after.Version, workerPIDs(after), workerPIDs(before))
	}
	if code, out := c.podman(t, 60*time.Second, reload...); code != 0 || !strings.Contains(get(t, url), "gen=5") {
		t.Fatalf("podman exec … baton reload --wait after the upgrade: exit %d, want 0 and generation 5 serving: %s", code, out)
	}
	sum := requireNoFailures(t, load)
	t.Logf("%s; %d requests through the upgrade and a reload, 0 failed", strings.TrimSpace(out), sum.Requests)
}

func TestPodmanStopAnswersRequestInFlight(t *testing.T) {
	c := podmanRun(t, []string{"-p", "127.0.0.1::8080"},
		"--workers", "4", "--listen", "http=tcp://0.0.0.0:8080", "--", "/bin/testworker")
	url := "http://" + c.port(t, "8080")
	slow := c.InFlight(t, url, 3*time.Second)
	start := time.Now()
	// podman stop: TERM, then KILL after 10 s.
	if code, out := c.podman(t, 30*time.Second, "stop", c.name); code != 0 {
		t.Fatalf("podman stop: exit %d: %s", code, out)
	}
	took := time.Since(start)
	if a := <-slow; a.Err != nil || !strings.Contains(a.Body, "slow done") {
		t.Fatalf("the request in flight at podman stop: %q, %v; want it answered", a.Body, a.Err)
	}
	if code := c.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("the container exited %d, want 0", code)
	}
	if took >= 10*time.Second {
		t.Fatalf("podman stop took %s: baton did not exit before podman's 10 s", took)
	}
	t.Logf("podman stop with a 3 s request in flight took %s", took.Round(time.Millisecond))
}

// Each of four workers leaves an orphan behind; a storm of HUPs replaces
// them all five times over: what is left is four orphans (those of the
// serving workers) adopted by baton, and not one zombie.
func TestPodmanReapsOrphans(t *testing.T) {
	c := podmanRun(t, nil, "--pidfile", "/tmp/baton.pid", "--workers", "4",
		"--listen", "http=tcp://0.0.0.0:8080", "--", "/bin/testworker", "-orphan")
	baton := c.hostPID(t)
	for range 5 {
		if code, out := c.podman(t, 30*time.Second, "kill", "--signal", "HUP", c.name); code != 0 {
			t.Fatalf("podman kill --signal HUP: exit %d: %s", code, out)
		}
	}
	// HUPs during a reload are coalesced into one more: generation 3 at
	// least, whatever the timing.
	c.WaitFor(t, 60*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" && e.Int("gen") >= 3 })
	gen := c.status(t, "").Generation
	c.waitFleet(t, "", 4, gen)
	// Each worker's helper (sh -c "sleep 300 &") was orphaned when sh
	// exited: baton, PID 1, adopted it. Those of the replaced workers went
	// with them.
	var orphans []harness.Proc
	harness.Eventually(t, 10*time.Second, "four orphaned sleeps adopted by baton", func() bool {
		orphans = harness.ProcsWhere(func(p harness.Proc) bool { return p.PPID == baton && p.Comm == "sleep" && p.State != "Z" })
		return len(orphans) == 4
	})
	requireNoZombies(t, baton)
	orphan := orphans[0]
	if err := syscall.Kill(orphan.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, "the killed orphan reaped", func() bool {
		_, exists := harness.ReadProc(orphan.PID)
		return !exists
	})
	requireNoZombies(t, baton)
}

func TestPodmanStopDelayReadiness(t *testing.T) {
	c := podmanRun(t, []string{"-p", "127.0.0.1::8080", "-p", "127.0.0.1::9090"},
		"--admin", "0.0.0.0:9090", "--stop-delay", "2s", "--listen", "http=tcp://0.0.0.0:8080", "--", "/bin/testworker")
	ready := "http://" + c.port(t, "9090") + "/-/ready"
	if code := podmanStatus(ready); code != http.StatusOK {
		t.Fatalf("/-/ready before the stop: %d, want 200", code)
	}
	load := startLoad(t, "http://"+c.port(t, "8080")+"/")

	start := time.Now()
	stopped := make(chan string, 1)
	go func() {
		out, err := exec.Command("podman", "stop", c.name).CombinedOutput()
		stopped <- fmt.Sprintf("%v %s", err, bytes.TrimSpace(out))
	}()
	harness.Eventually(t, 5*time.Second, "/-/ready 503 once podman stop has begun", func() bool {
		return podmanStatus(ready) == http.StatusServiceUnavailable
	})
	notReady := time.Since(start)
	// Still serving through the delay, while the balancer takes it out.
	before := load.Done()
	harness.Eventually(t, 5*time.Second, "requests answered after /-/ready said 503", func() bool { return load.Done() >= before+200 })
	if time.Since(start) >= 2*time.Second {
		t.Fatalf("the stop delay was over before the test saw requests answered in it (%s)", time.Since(start))
	}
	sum := requireNoFailures(t, load)
	if out := <-stopped; !strings.HasPrefix(out, "<nil>") {
		t.Fatalf("podman stop: %s", out)
	}
	took := time.Since(start)
	if code := c.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("the container exited %d, want 0", code)
	}
	if took < 2*time.Second || took >= 10*time.Second {
		t.Fatalf("podman stop took %s: want the 2 s stop delay, then the drain, within podman's 10 s", took)
	}
	t.Logf("/-/ready 503 %s after podman stop began; %d requests answered, 0 failed; stopped after %s",
		notReady.Round(time.Millisecond), sum.Requests, took.Round(time.Millisecond))
}

// podmanStatus is the status code of a GET of url, 0 if it fails.
func podmanStatus(url string) int {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// The pod of scripts/kubernetes/pod.yaml, run by `podman kube play` with
// the test image and worker, loopback host ports and a stop delay of 1 s:
// baton is PID 1 of the app container with four workers, a HUP replaces
// them under load, /-/ready answers 200; stopping the app container
// with the pod's grace period answers the request in flight, says 503
// on /-/ready first, and exits 0; `podman kube down` then removes it.
func TestPodmanKubePlay(t *testing.T) {
	image := podmanNeed(t)
	if _, err := exec.LookPath("catatonit"); err != nil {
		t.Skip("podman kube play needs catatonit for its pod's infra container (Debian package catatonit; scripts/test installs it)")
	}
	manifest, err := os.ReadFile(filepath.Join(harness.ModuleRoot(), "scripts", "kubernetes", "pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	grace := regexp.MustCompile(`terminationGracePeriodSeconds: (\d+)`).FindSubmatch(manifest)
	if grace == nil {
		t.Fatal("scripts/kubernetes/pod.yaml: no terminationGracePeriodSeconds")
	}
	pod := fmt.Sprintf("baton-test-%d-%d", os.Getpid(), podmanSeq.Add(1))
	app := pod + "-app"
	web, admin := freePort(t), freePort(t)
	yaml := string(manifest)
	for _, r := range []struct{ old, new string }{
		{"  name: app\nspec:", "  name: " + pod + "\nspec:"},
		{"image: example/app", "image: " + image},
		{"/usr/local/bin/baton", "/bin/baton"},
		{"/app/server", "/bin/testworker"},
		{`"--stop-delay", "5s"`, `"--stop-delay", "1s"`},
		{"- containerPort: 8080", fmt.Sprintf("- containerPort: 8080\n      hostIP: 127.0.0.1\n      hostPort: %s", web[strings.LastIndex(web, ":")+1:])},
		{"- containerPort: 9090", fmt.Sprintf("- containerPort: 9090\n      hostIP: 127.0.0.1\n      hostPort: %s", admin[strings.LastIndex(admin, ":")+1:])},
	} {
		if !strings.Contains(yaml, r.old) {
			t.Fatalf("scripts/kubernetes/pod.yaml no longer has %q", r.old)
		}
		yaml = strings.ReplaceAll(yaml, r.old, r.new)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "pod.yaml")
	// kube play takes no --ulimit or --runtime: podmanRunFlags go in a
	// containers.conf of the test's own.
	flags := podmanRunFlags()
	conf := "[containers]\ndefault_ulimits = ["
	for i := 0; i < len(flags); i += 2 {
		switch flags[i] {
		case "--ulimit":
			conf += fmt.Sprintf("%q, ", flags[i+1])
		}
	}
	conf = strings.TrimSuffix(conf, ", ") + "]\n"
	if slices.Contains(flags, "runc") {
		conf += "[engine]\nruntime = \"runc\"\n"
	}
	confFile := filepath.Join(dir, "containers.conf")
	for path, text := range map[string]string{file: yaml, confFile: conf} {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kube := func(d time.Duration, args ...string) (int, string) {
		t.Helper()
		cmd := exec.Command("podman", args...)
		cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+confFile)
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-done:
			case <-time.After(d):
				cmd.Process.Kill()
			}
		}()
		out, err := cmd.CombinedOutput()
		if _, ok := err.(*exec.ExitError); err != nil && !ok {
			t.Fatalf("podman %s: %v", strings.Join(args, " "), err)
		}
		return cmd.ProcessState.ExitCode(), string(out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			_, out := kube(30*time.Second, "logs", app)
			t.Logf("podman logs %s:\n%s", app, out)
		}
		kube(60*time.Second, "pod", "rm", "--force", pod)
	})
	if code, out := kube(60*time.Second, "kube", "play", file); code != 0 {
		t.Fatalf("podman kube play scripts/kubernetes/pod.yaml: exit %d: %s", code, out)
	}
	c := &container{name: app}
	requirePID1(t, c.hostPID(t))
	url := "http://" + web + "/"
	ready := "http://" + admin + "/-/ready"
	harness.Eventually(t, 30*time.Second, "the pod's four workers serving, /-/ready 200", func() bool {
		return podmanStatus(ready) == http.StatusOK
	})
	c.waitFleet(t, "", 4, 1)

	load := startLoad(t, url)
	if code, out := c.podman(t, 30*time.Second, "kill", "--signal", "HUP", app); code != 0 {
		t.Fatalf("podman kill --signal HUP %s: exit %d: %s", app, code, out)
	}
	c.waitFleet(t, "", 4, 2)
	sum := requireNoFailures(t, load)

	// The stop: podman 4.3's kube play leaves the container's stop
	// timeout at 10 s whatever terminationGracePeriodSeconds says, and
	// stopping the pod stops its infra container, and with it the
	// published ports, at once; so the app container is stopped first,
	// with the pod's grace period.
	slow := harness.GetInBackground(url + "slow?d=2s")
	harness.Eventually(t, 10*time.Second, "a slow request in flight", func() bool {
		_, out := c.podman(t, 30*time.Second, "logs", app)
		return strings.Contains(out, "slow request started")
	})
	start := time.Now()
	stopped := make(chan string, 1)
	go func() {
		out, err := exec.Command("podman", "stop", "--time", string(grace[1]), app).CombinedOutput()
		stopped <- fmt.Sprintf("%v %s", err, bytes.TrimSpace(out))
	}()
	harness.Eventually(t, 5*time.Second, "/-/ready 503 once the stop has begun", func() bool {
		return podmanStatus(ready) == http.StatusServiceUnavailable
	})
	if a := <-slow; a.Err != nil || !strings.Contains(a.Body, "slow done") {
		t.Fatalf("the request in flight at the stop: %q, %v; want it answered", a.Body, a.Err)
	}
	if out := <-stopped; !strings.HasPrefix(out, "<nil>") {
		t.Fatalf("podman stop --time %s %s: %s", grace[1], app, out)
	}
	took := time.Since(start)
	if code, out := c.podman(t, 30*time.Second, "inspect", "--format", "{{.State.ExitCode}}", app); code != 0 || strings.TrimSpace(out) != "0" {
		t.Fatalf("the app container exited %q (podman inspect exit %d), want 0", strings.TrimSpace(out), code)
	}
	if code, out := kube(60*time.Second, "kube", "down", file); code != 0 {
		t.Fatalf("podman kube down: exit %d: %s", code, out)
	}
	t.Logf("podman kube play: HUP under load: %d requests, 0 failed; stop with a 2 s request in flight: answered, exit 0 after %s",
		sum.Requests, took.Round(time.Millisecond))
}
