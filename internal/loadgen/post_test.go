package loadgen_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/baton-sh/baton/internal/loadgen"
)

func TestPostSendsBody(t *testing.T) {
	body := []byte("one POST body")
	var mu sync.Mutex
	var bad []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, err := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || err != nil || string(got) != string(body) {
			mu.Lock()
			bad = append(bad, r.Method+" "+string(got))
			mu.Unlock()
		}
		io.WriteString(w, "pid=5\n")
	}))
	defer srv.Close()
	const n = 20
	l, err := loadgen.Start(loadgen.Config{URL: srv.URL, NewConns: 1, KeepAlive: 1, MaxRequests: n, PostBody: body})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, l, n)
	if sum := l.Stop().Summarize(); sum.Requests != n || sum.Failed != 0 || sum.PIDs[5] != n {
		t.Errorf("Summarize = %+v", sum)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("the server got %d requests that are not the POST: %q", len(bad), bad)
	}
}

// TestPostIsNeverRetried: a server that reads the second request on each
// keep-alive connection and closes the connection without an answer, as a
// careless drain does. net/http resends a GET on a new connection, so GET
// load sees nothing; a POST is not resent, so POST load counts each one.
func TestPostIsNeverRetried(t *testing.T) {
	var mu sync.Mutex
	perConn := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		perConn[r.RemoteAddr]++
		nth := perConn[r.RemoteAddr]
		mu.Unlock()
		if nth == 2 {
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		io.WriteString(w, "pid=6\n")
	}))
	defer srv.Close()

	const n = 10
	for _, tt := range []struct {
		name       string
		body       []byte
		wantFailed bool
	}{{"GET", nil, false}, {"POST", []byte("x"), true}} {
		l, err := loadgen.Start(loadgen.Config{URL: srv.URL, KeepAlive: 1, MaxRequests: n, PostBody: tt.body})
		if err != nil {
			t.Fatal(err)
		}
		waitDone(t, l, n)
		sum := l.Stop().Summarize()
		t.Logf("%s: %s", tt.name, sum)
		if (sum.Failed > 0) != tt.wantFailed {
			t.Errorf("%s: %s; want failures: %v", tt.name, sum, tt.wantFailed)
		}
	}
}
