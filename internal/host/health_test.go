package host

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Memory counts the worker and every descendant, however deep.
func TestMemoryCountsTheWholeTree(t *testing.T) {
	sh := exec.Command("sh", "-c", "sleep 60 & (sleep 60 & wait) & wait")
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sh.Process.Kill(); sh.Wait() }()
	var tree []int
	deadline := time.Now().Add(5 * time.Second)
	for len(tree) < 4 { // sh, sleep, the subshell and its sleep
		if time.Now().After(deadline) {
			t.Fatalf("process tree of %d: %v, want 4 processes", sh.Process.Pid, tree)
		}
		time.Sleep(10 * time.Millisecond)
		tree = descendants(sh.Process.Pid)
	}
	defer func() {
		for _, p := range tree[1:] {
			if proc, err := os.FindProcess(p); err == nil {
				proc.Kill()
			}
		}
	}()
	var want int64
	for _, p := range tree {
		want += rss(t, p)
	}
	h := &Host{}
	got, err := h.Memory(sh.Process.Pid)
	if err != nil || got != want {
		t.Fatalf("Memory(%d) = %d, %v; want %d, the sum of %v", sh.Process.Pid, got, err, want, tree)
	}
	if _, err := h.Memory(1 << 30); err == nil {
		t.Fatal("Memory of no process: no error")
	}
}

// A child is listed under the thread that forked it, which in a Go
// program is any of its threads.
func TestMemoryFindsChildrenOfEveryThread(t *testing.T) {
	var (
		mu   sync.Mutex
		kids []*exec.Cmd
		wg   sync.WaitGroup
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // each fork from a thread of its own
			defer runtime.UnlockOSThread()
			c := exec.Command("sleep", "60")
			if c.Start() == nil {
				mu.Lock()
				kids = append(kids, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range kids {
			c.Process.Kill()
			c.Wait()
		}
	}()
	var found []int
	walkTree(os.Getpid(), func(pid int, _ []byte) { found = append(found, pid) })
	for _, c := range kids {
		if !slices.Contains(found, c.Process.Pid) {
			t.Fatalf("process tree of the test process %v, want %d in it", found, c.Process.Pid)
		}
	}
}

// The cost of one check of --max-memory for a worker (here, this test
// process and its threads).
func BenchmarkMemory(b *testing.B) {
	h := &Host{}
	for b.Loop() {
		if _, err := h.Memory(os.Getpid()); err != nil {
			b.Fatal(err)
		}
	}
}

// descendants is pid and every process below it.
func descendants(pid int) []int {
	out := []int{}
	for todo := []int{pid}; len(todo) > 0; {
		p := todo[0]
		todo = append(todo[1:], childrenOf(p)...)
		out = append(out, p)
	}
	return out
}

// childrenOf lists the children of every thread of pid, read the plain
// way, with os.ReadDir and os.ReadFile.
func childrenOf(pid int) []int {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tids, _ := os.ReadDir(dir)
	var out []int
	for _, tid := range tids {
		b, _ := os.ReadFile(dir + "/" + tid.Name() + "/children")
		for _, f := range bytes.Fields(b) {
			if n, err := strconv.Atoi(string(f)); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// rss reads pid's resident memory from /proc/PID/statm, in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		t.Fatal(err)
	}
	f := bytes.Fields(b)
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}

// A probe is one bounded GET: a 2xx passes, whatever its body; an https
// service with a certificate nobody signed passes too; a redirect, an
// error status, a body that never ends or an answer that never comes
// fails within ProbeTimeout and a little, with a line saying why.
func TestProbe(t *testing.T) {
	endless := make(chan struct{})
	t.Cleanup(func() { close(endless) })
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for i := 0; i < 16<<10; i++ { // 1 GiB, if anyone read it
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) })
	mux.HandleFunc("/500", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	mux.HandleFunc("/silent", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-endless:
		case <-r.Context().Done():
		}
	})
	plain := httptest.NewServer(mux)
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(mux)
	defer tlsSrv.Close()
	for _, tc := range []struct {
		url    string
		ok     bool
		detail string
	}{
		{plain.URL + "/ok", true, ""},
		{tlsSrv.URL + "/ok", true, ""},
		{plain.URL + "/big", true, ""},
		{plain.URL + "/loop", false, "302 from " + plain.URL + "/loop"},
		{plain.URL + "/500", false, "500 from " + plain.URL + "/500"},
		{plain.URL + "/silent", false, "Client.Timeout exceeded"},
		{"https://" + strings.TrimPrefix(plain.URL, "http://") + "/ok", false, "server gave HTTP response to HTTPS client"},
	} {
		type result struct {
			ok     bool
			detail string
		}
		done := make(chan result, 1)
		start := time.Now()
		(&Host{}).Probe(tc.url, func(ok bool, detail string) { done <- result{ok, detail} })
		r := <-done
		if took := time.Since(start); took > ProbeTimeout+time.Second {
			t.Errorf("probe of %s took %s", tc.url, took)
		}
		if r.ok != tc.ok || !strings.Contains(r.detail, tc.detail) || strings.Contains(r.detail, "\n") {
			t.Errorf("probe of %s: %v %q; want %v and one line with %q", tc.url, r.ok, r.detail, tc.ok, tc.detail)
		}
	}
}

// An exec refused for the size of its environment says which input to
// shrink, rather than the kernel's "argument list too long" alone.
func TestStartErrorTooBig(t *testing.T) {
	err := (&Host{}).startError("/srv/app", "", syscall.E2BIG)
	want := "start /srv/app: argument list too long: its arguments and environment together are over the kernel's limit (a quarter of the stack limit, ulimit -s): make --env-file and --env smaller"
	if err.Error() != want || !errors.Is(err, syscall.E2BIG) {
		t.Fatalf("startError(E2BIG) = %q, want %q", err, want)
	}
}
