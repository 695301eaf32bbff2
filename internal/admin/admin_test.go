package admin

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/upgrader"
)

// slowMaster's reloads take reloadTakes.
type slowMaster struct{ reloadTakes time.Duration }

func (m slowMaster) Reload(upgrader.Trigger) <-chan upgrader.Result {
	c := make(chan upgrader.Result, 1)
	time.AfterFunc(m.reloadTakes, func() { c <- upgrader.Result{Generation: 2, Took: m.reloadTakes} })
	return c
}
func (slowMaster) Status() (upgrader.Status, error) {
	return upgrader.Status{Generation: 1, Ready: true}, nil
}
func (slowMaster) Stop() {}
func (slowMaster) Upgrade() <-chan upgrader.UpgradeResult {
	c := make(chan upgrader.UpgradeResult, 1)
	c <- upgrader.UpgradeResult{Err: upgrader.ErrStopping}
	return c
}
func (m slowMaster) Scale(int) <-chan upgrader.Result {
	return m.Reload(upgrader.TriggerAdmin)
}

// serve starts an admin endpoint on loopback with lim and returns its URL.
func serve(t *testing.T, m Master, lim limits) string {
	t.Helper()
	s, err := listen("127.0.0.1:0", m, NewMetrics(m.Status), true, lim)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Close() })
	return "http://" + s.Addr().String()
}

var short = limits{maxConns: 4, readHeader: 200 * time.Millisecond, read: 200 * time.Millisecond,
	write: 200 * time.Millisecond, idle: 200 * time.Millisecond}

// A reload that takes longer than every timeout is still answered.
func TestReloadAnswerOutlivesTheTimeouts(t *testing.T) {
	url := serve(t, slowMaster{reloadTakes: 5 * short.write}, short)
	resp, err := http.Post(url+"/-/reload", "", nil)
	if err != nil {
		t.Fatalf("POST /-/reload: %v", err)
	}
	defer resp.Body.Close()
	var r control.Response
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != 200 || !r.OK || r.Generation != 2 {
		t.Fatalf("POST /-/reload: %d %+v %v, want 200 and generation 2", resp.StatusCode, r, err)
	}
}

// Connections that send nothing, and keep-alive connections left idle,
// are closed by the endpoint.
func TestIdleConnectionsAreClosed(t *testing.T) {
	url := serve(t, slowMaster{}, short)
	addr := strings.TrimPrefix(url, "http://")
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	kept, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	io.WriteString(kept, "GET /-/healthy HTTP/1.1\r\nHost: baton\r\n\r\n")
	br := bufio.NewReader(kept)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /-/healthy: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	for name, c := range map[string]io.Reader{"silent": silent, "keep-alive": br} {
		start := time.Now()
		silent.SetReadDeadline(time.Now().Add(5 * time.Second))
		kept.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%s connection: read %d bytes, %v after %s; want it closed by the endpoint", name, n, err, time.Since(start))
		}
	}
}

// With every slot taken by connections that say nothing, a newcomer is
// served at once: the one silent longest is closed to make room.
func TestSilentConnectionsMakeRoom(t *testing.T) {
	url := serve(t, slowMaster{}, limits{maxConns: 4, readHeader: time.Minute, read: time.Minute, write: time.Minute, idle: time.Minute})
	addr := strings.TrimPrefix(url, "http://")
	var silent []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	client := http.Client{Timeout: 10 * time.Second}
	for i := range 8 {
		start := time.Now()
		resp, err := client.Get(url + "/-/healthy")
		if err != nil {
			t.Fatalf("GET /-/healthy %d with every slot held by a silent connection: %v after %s", i, err, time.Since(start))
		}
		resp.Body.Close()
		client.CloseIdleConnections()
	}
	silent[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent[0].Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the oldest silent connection: %v, want it closed to make room", err)
	}
}

// With every slot busy with a request, a newcomer waits for one to end.
func TestBusyConnectionsMakeANewcomerWait(t *testing.T) {
	const reload = 500 * time.Millisecond
	url := serve(t, slowMaster{reloadTakes: reload}, limits{maxConns: 2, readHeader: time.Minute, read: time.Minute, write: time.Minute, idle: time.Minute})
	start := time.Now()
	done := make(chan error, 2)
	for range 2 {
		go func() {
			resp, err := http.Post(url+"/-/reload", "", nil)
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
	}
	time.Sleep(reload / 4) // both reloads under way, each on a connection of its own
	// A client of its own: not one that could take a reload's connection
	// once it is idle.
	client := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url + "/-/healthy")
	if err != nil {
		t.Fatalf("GET /-/healthy: %v", err)
	}
	resp.Body.Close()
	if waited := time.Since(start); waited < reload {
		t.Errorf("served after %s, while both slots were busy with reloads that take %s", waited, reload)
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Errorf("POST /-/reload: %v", err)
		}
	}
}

// countingMaster records the counts it is asked to scale to.
type countingMaster struct {
	slowMaster
	asked chan int
}

func (m countingMaster) Scale(n int) <-chan upgrader.Result {
	m.asked <- n
	c := make(chan upgrader.Result, 1)
	c <- upgrader.Result{Generation: 1}
	return c
}

// POST /-/scale takes one count from 1 to MaxWorkers; anything else is a
// 400 that says so, and never reaches the master.
func TestScaleCounts(t *testing.T) {
	m := countingMaster{asked: make(chan int, 1)}
	url := serve(t, m, short)
	for _, tc := range []struct {
		query string
		want  int // the count asked of the master; 0: a 400
	}{
		{"workers=4", 4},
		{"workers=1", 1},
		{"workers=1024", 1024},
		{"workers=+2", 0}, // "+" is a space in a query
		{"", 0},
		{"workers=", 0},
		{"workers=0", 0},
		{"workers=-3", 0},
		{"workers=abc", 0},
		{"workers=1e9", 0},
		{"workers=1025", 0},
		{"workers=1000000000", 0},
		{"workers=99999999999999999999999", 0},
		{"workers=2&workers=3", 0},
		{"workers=%00", 0},
		{"workers=" + strings.Repeat("9", 4000), 0},
	} {
		resp, err := http.Post(url+"/-/scale?"+tc.query, "", nil)
		if err != nil {
			t.Fatalf("POST /-/scale?%.40s: %v", tc.query, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var asked int
		select {
		case asked = <-m.asked:
		default:
		}
		switch {
		case tc.want > 0 && (resp.StatusCode != 200 || asked != tc.want):
			t.Errorf("POST /-/scale?%s: %d %q, asked for %d; want 200 and %d", tc.query, resp.StatusCode, body, asked, tc.want)
		case tc.want == 0 && (resp.StatusCode != 400 || asked != 0 || string(body) != "want ?workers=N once, with N from 1 to 1024\n"):
			t.Errorf("POST /-/scale?%.40s: %d %q, asked for %d; want 400 saying what is wanted", tc.query, resp.StatusCode, body, asked)
		}
	}
}
