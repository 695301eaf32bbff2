package loadgen_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
)

func TestStartRefuses(t *testing.T) {
	tests := []struct {
		url  string
		want string
	}{
		{"http://example.com/", "example.com is not a loopback address"},
		{"http://10.0.0.1:8080/", "10.0.0.1 is not a loopback address"},
		{"http://0.0.0.0:8080/", "0.0.0.0 is not a loopback address"},
		{"http://[::]:8080/", ":: is not a loopback address"},
		{"http://[2001:db8::1]/", "2001:db8::1 is not a loopback address"},
		{"http://localhost.example.com/", "localhost.example.com is not a loopback address"},
		{"http://127.0.0.1.nip.io/", "127.0.0.1.nip.io is not a loopback address"},
		{"http:///path", " is not a loopback address"},
		{"http://127.0.0.1:bad/", "loadgen: "},
		{"://x", "loadgen: "},
	}
	for _, tt := range tests {
		l, err := loadgen.Start(loadgen.Config{URL: tt.url, NewConns: 1, MaxRequests: 1})
		if err == nil {
			l.Stop()
			t.Errorf("Start(%q) sent load", tt.url)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Start(%q) error %q does not contain %q", tt.url, err, tt.want)
		}
	}

	// A loopback URL without any client loop is refused too.
	if _, err := loadgen.Start(loadgen.Config{URL: "http://127.0.0.1:1/"}); err == nil || !strings.Contains(err.Error(), "no client loops") {
		t.Errorf("Start with no loops: %v", err)
	}
}

func TestStartAcceptsLoopback(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	port := srv.Listener.Addr().String()[strings.LastIndex(srv.Listener.Addr().String(), ":"):]
	for _, host := range []string{"127.0.0.1", "localhost", "127.0.0.2", "[::1]"} {
		l, err := loadgen.Start(loadgen.Config{URL: "http://" + host + port + "/", NewConns: 1, MaxRequests: 1})
		if err != nil {
			t.Errorf("Start(%s): %v", host, err)
			continue
		}
		l.Stop()
	}
}

// waitDone waits until l has completed n requests.
func waitDone(t *testing.T, l *loadgen.Load, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for l.Done() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d requests done after 5s", l.Done(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLoad(t *testing.T) {
	var mu sync.Mutex
	conns := map[string]int{} // requests per client connection
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		conns[r.RemoteAddr]++
		mu.Unlock()
		fmt.Fprintf(w, "hello from pid=4242 gen 3\n")
	}))
	defer srv.Close()

	const n = 60
	start := time.Now()
	l, err := loadgen.Start(loadgen.Config{URL: srv.URL, NewConns: 2, KeepAlive: 2, MaxRequests: n})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, l, n)
	samples := l.Stop()

	if len(samples) != n || l.Done() != n || l.Failed() != 0 {
		t.Fatalf("%d samples, Done %d, Failed %d; want %d, %d, 0", len(samples), l.Done(), l.Failed(), n, n)
	}
	for i, s := range samples {
		if s.Err != "" || s.PID != 4242 {
			t.Errorf("sample %d: PID %d, Err %q; want 4242 and no error", i, s.PID, s.Err)
		}
		if s.Latency <= 0 || s.Start.Before(start) {
			t.Errorf("sample %d: Start %v, Latency %v", i, s.Start, s.Latency)
		}
		if i > 0 && s.Start.Before(samples[i-1].Start) {
			t.Errorf("samples not in order of start: %d before %d", i, i-1)
		}
	}
	sum := samples.Summarize()
	if sum.Requests != n || sum.Failed != 0 || len(sum.Errors) != 0 || sum.PIDs[4242] != n || len(sum.PIDs) != 1 {
		t.Errorf("Summarize = %+v", sum)
	}
	if !(0 < sum.P50 && sum.P50 <= sum.P99 && sum.P99 <= sum.Max) {
		t.Errorf("percentiles out of order: p50 %v, p99 %v, max %v", sum.P50, sum.P99, sum.Max)
	}

	// NewConns loops open a connection per request; KeepAlive loops
	// reuse theirs. So at least one connection carried many requests,
	// and there are many more connections than the 2 keep-alive ones.
	mu.Lock()
	defer mu.Unlock()
	total, most := 0, 0
	for _, c := range conns {
		total += c
		most = max(most, c)
	}
	if total != n {
		t.Errorf("server saw %d requests, want %d", total, n)
	}
	if most < 2 || len(conns) <= 2 {
		t.Errorf("server saw %d connections, the busiest with %d requests: want keep-alive and new-connection loops", len(conns), most)
	}
}

func TestLoadFailures(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		wantErr string
		wantPID int
	}{
		{"status 500", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintln(w, "pid=7 broken")
		}, "status 500 Internal Server Error", 7},
		{"status 503", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "draining", http.StatusServiceUnavailable)
		}, "status 503 Service Unavailable", 0},
		{"truncated body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100")
			fmt.Fprint(w, "pid=9 short")
		}, "unexpected EOF", 9},
		{"no pid in the body", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "pid=x")
		}, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			const n = 12
			l, err := loadgen.Start(loadgen.Config{URL: srv.URL, NewConns: 1, KeepAlive: 1, MaxRequests: n})
			if err != nil {
				t.Fatal(err)
			}
			waitDone(t, l, n)
			samples := l.Stop()
			wantFailed := n
			if tt.wantErr == "" {
				wantFailed = 0
			}
			if len(samples) != n || l.Failed() != wantFailed {
				t.Fatalf("%d samples, %d failed; want %d, %d", len(samples), l.Failed(), n, wantFailed)
			}
			for i, s := range samples {
				if !strings.Contains(s.Err, tt.wantErr) || (tt.wantErr == "") != (s.Err == "") {
					t.Errorf("sample %d: Err %q, want %q", i, s.Err, tt.wantErr)
				}
				if s.PID != tt.wantPID {
					t.Errorf("sample %d: PID %d, want %d", i, s.PID, tt.wantPID)
				}
			}
			sum := samples.Summarize()
			if sum.Failed != wantFailed || sum.Requests != n {
				t.Errorf("Summarize = %+v", sum)
			}
			if wantFailed > 0 && (sum.P50 != 0 || len(sum.PIDs) != 0) {
				t.Errorf("failed requests count in latencies or PIDs: %+v", sum)
			}
		})
	}
}

// Every connection of the load goes through the dialer given.
func TestDialContext(t *testing.T) {
	var mu sync.Mutex
	conns := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		conns[r.RemoteAddr] = true
		mu.Unlock()
		fmt.Fprintln(w, "pid=5")
	}))
	defer srv.Close()
	var dialled sync.Map
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			dialled.Store(c.LocalAddr().String(), true)
		}
		return c, err
	}
	const n = 20
	l, err := loadgen.Start(loadgen.Config{URL: srv.URL, NewConns: 1, KeepAlive: 1, MaxRequests: n, DialContext: dial})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, l, n)
	if sum := l.Stop().Summarize(); sum.Failed != 0 || sum.Requests != n {
		t.Fatalf("Summarize = %+v", sum)
	}
	mu.Lock()
	defer mu.Unlock()
	for c := range conns {
		if _, ok := dialled.Load(c); !ok {
			t.Errorf("connection from %s was not opened by the dialer given", c)
		}
	}
	if len(conns) < 2 {
		t.Errorf("the server saw %d connections, want several", len(conns))
	}
}

func TestLoadTransportErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	url := srv.URL
	srv.Close() // nothing listens on the port now
	l, err := loadgen.Start(loadgen.Config{URL: url, NewConns: 1, MaxRequests: 5})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, l, 5)
	samples := l.Stop()
	if len(samples) != 5 || l.Failed() != 5 {
		t.Fatalf("%d samples, %d failed; want 5 refused", len(samples), l.Failed())
	}
	if !strings.Contains(samples[0].Err, "connection refused") {
		t.Errorf("Err %q, want connection refused", samples[0].Err)
	}
}

func TestLoadBounds(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()

	t.Run("rate", func(t *testing.T) {
		// 20 requests at 200/s over 2 loops: the last starts 95ms after
		// the first at the earliest.
		l, err := loadgen.Start(loadgen.Config{URL: srv.URL, KeepAlive: 2, Rate: 200, MaxRequests: 20})
		if err != nil {
			t.Fatal(err)
		}
		waitDone(t, l, 20)
		s := l.Stop()
		if len(s) != 20 {
			t.Fatalf("%d samples", len(s))
		}
		if spread := s[len(s)-1].Start.Sub(s[0].Start); spread < 90*time.Millisecond {
			t.Errorf("20 requests at 200/s started within %v", spread)
		}
	})
	t.Run("duration", func(t *testing.T) {
		start := time.Now()
		l, err := loadgen.Start(loadgen.Config{URL: srv.URL, KeepAlive: 1, Rate: 100, MaxDuration: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := l.Done()
			time.Sleep(50 * time.Millisecond)
			if l.Done() == n && time.Since(start) > 100*time.Millisecond {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the load did not stop at MaxDuration")
			}
		}
		s := l.Stop()
		if len(s) == 0 || len(s) > 12 {
			t.Errorf("%d requests at 100/s in 100ms", len(s))
		}
	})
	t.Run("stop", func(t *testing.T) {
		l, err := loadgen.Start(loadgen.Config{URL: srv.URL, NewConns: 1, KeepAlive: 1})
		if err != nil {
			t.Fatal(err)
		}
		waitDone(t, l, 10)
		s := l.Stop()
		if len(s) < 10 || l.Failed() != 0 {
			t.Errorf("%d samples, %d failed after Stop", len(s), l.Failed())
		}
		// Stop is idempotent and the load has ended.
		n := l.Done()
		if again := l.Stop(); len(again) != len(s) || l.Done() != n {
			t.Errorf("second Stop: %d samples, Done %d; want %d, %d", len(again), l.Done(), len(s), n)
		}
	})
}

// samplesAt makes one sample per latency, started a second apart.
func samplesAt(t0 time.Time, lat ...time.Duration) loadgen.Samples {
	s := make(loadgen.Samples, len(lat))
	for i, d := range lat {
		s[i] = loadgen.Sample{Start: t0.Add(time.Duration(i) * time.Second), Latency: d, PID: 100 + i%2}
	}
	return s
}

func TestBetween(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := samplesAt(t0, 1, 2, 3, 4, 5) // starts at t0+0s … t0+4s
	sec := func(n float64) time.Time { return t0.Add(time.Duration(n * float64(time.Second))) }
	tests := []struct {
		from, to time.Time
		want     []time.Duration // latencies of the samples returned
	}{
		{sec(0), sec(5), []time.Duration{1, 2, 3, 4, 5}},
		{sec(-10), sec(100), []time.Duration{1, 2, 3, 4, 5}},
		{sec(1), sec(3), []time.Duration{2, 3}},        // from inclusive, to exclusive
		{sec(0.5), sec(3.5), []time.Duration{2, 3, 4}}, // between starts
		{sec(4), sec(4), nil},                          // empty range
		{sec(4), sec(4.001), []time.Duration{5}},       // just the last
		{sec(5), sec(10), nil},                         // after all
		{sec(-5), sec(0), nil},                         // before all
		{sec(3), sec(1), nil},                          // reversed
		{time.Time{}, sec(1), []time.Duration{1}},      // zero from
		{sec(2), sec(2.5), []time.Duration{3}},         // one
		{sec(-1), sec(0.000001), []time.Duration{1}},   // the first
		{sec(1), sec(1).Add(time.Nanosecond), []time.Duration{2}},
	}
	for _, tt := range tests {
		got := s.Between(tt.from, tt.to)
		var lat []time.Duration
		for _, x := range got {
			lat = append(lat, x.Latency)
		}
		if !slices.Equal(lat, tt.want) {
			t.Errorf("Between(t0%+v, t0%+v) = %v, want %v", tt.from.Sub(t0), tt.to.Sub(t0), lat, tt.want)
		}
	}

	// Samples that start at the same instant stay together.
	same := loadgen.Samples{{Start: t0}, {Start: sec(1)}, {Start: sec(1)}, {Start: sec(1)}, {Start: sec(2)}}
	if got := same.Between(sec(1), sec(2)); len(got) != 3 {
		t.Errorf("Between over three equal starts = %d samples", len(got))
	}
	if got := loadgen.Samples(nil).Between(sec(0), sec(1)); len(got) != 0 {
		t.Errorf("Between on no samples = %v", got)
	}
}

func TestSummarize(t *testing.T) {
	t0 := time.Now()
	ms := time.Millisecond

	// 101 successes with latencies 1..101ms, in shuffled order: p50 is the
	// median, 51ms; p99 is the 100th of 101, 100ms.
	var lat []time.Duration
	for i := 1; i <= 101; i++ {
		lat = append(lat, time.Duration((i*37)%101+1)*ms)
	}
	s := samplesAt(t0, lat...)
	// Failures count apart: not in latencies, not in PIDs.
	s = append(s,
		loadgen.Sample{Start: t0, Latency: time.Hour, PID: 999, Err: "status 502 Bad Gateway"},
		loadgen.Sample{Start: t0, Latency: time.Hour, Err: "EOF"},
		loadgen.Sample{Start: t0, Latency: time.Hour, Err: "EOF"},
	)
	sum := s.Summarize()
	if sum.Requests != 104 || sum.Failed != 3 {
		t.Errorf("Requests %d, Failed %d; want 104, 3", sum.Requests, sum.Failed)
	}
	if sum.P50 != 51*ms || sum.P99 != 100*ms || sum.Max != 101*ms {
		t.Errorf("p50 %v, p99 %v, max %v; want 51ms, 100ms, 101ms", sum.P50, sum.P99, sum.Max)
	}
	if want := map[string]int{"status 502 Bad Gateway": 1, "EOF": 2}; !mapsEqual(sum.Errors, want) {
		t.Errorf("Errors = %v, want %v", sum.Errors, want)
	}
	if want := map[int]int{100: 51, 101: 50}; !mapsEqual(sum.PIDs, want) {
		t.Errorf("PIDs = %v, want %v", sum.PIDs, want)
	}
	str := sum.String()
	for _, want := range []string{"104 requests, 3 failed, p50 51ms, p99 100ms, max 101ms, 2 worker pids", "; 2× EOF", "; 1× status 502 Bad Gateway"} {
		if !strings.Contains(str, want) {
			t.Errorf("String() = %q, does not contain %q", str, want)
		}
	}

	// A percentile p is the latency at index len*p/100 of the sorted
	// successes: with 100 samples, p99 is the slowest.
	tests := []struct {
		name          string
		s             loadgen.Samples
		p50, p99, max time.Duration
	}{
		{"none", nil, 0, 0, 0},
		{"one", samplesAt(t0, 7*ms), 7 * ms, 7 * ms, 7 * ms},
		{"three", samplesAt(t0, 30*ms, 10*ms, 20*ms), 20 * ms, 30 * ms, 30 * ms},
		{"two", samplesAt(t0, 10*ms, 20*ms), 20 * ms, 20 * ms, 20 * ms},
		{"one slow in a hundred", samplesAt(t0, append(slices.Repeat([]time.Duration{ms}, 99), time.Second)...), ms, time.Second, time.Second},
		{"one slow in two hundred", samplesAt(t0, append(slices.Repeat([]time.Duration{ms}, 199), time.Second)...), ms, ms, time.Second},
		{"two slow in two hundred", samplesAt(t0, append(slices.Repeat([]time.Duration{ms}, 198), time.Second, time.Second)...), ms, time.Second, time.Second},
		{"only failures", loadgen.Samples{{Err: "x", Latency: ms}}, 0, 0, 0},
	}
	for _, tt := range tests {
		sum := tt.s.Summarize()
		if sum.P50 != tt.p50 || sum.P99 != tt.p99 || sum.Max != tt.max {
			t.Errorf("%s: p50 %v, p99 %v, max %v; want %v, %v, %v", tt.name, sum.P50, sum.P99, sum.Max, tt.p50, tt.p99, tt.max)
		}
		if sum.Errors == nil || sum.PIDs == nil {
			t.Errorf("%s: nil maps in %+v", tt.name, sum)
		}
	}
}

func TestSummaryStringErrors(t *testing.T) {
	sum := loadgen.Summary{Requests: 9, Failed: 9, Errors: map[string]int{"d": 1, "a": 4, "c": 2, "b": 1, "e": 1}}
	want := "9 requests, 9 failed, p50 0s, p99 0s, max 0s, 0 worker pids; 4× a; 1× b; 2× c; and 2 more kinds of error"
	if got := sum.String(); got != want {
		t.Errorf("String() =\n  %q\nwant\n  %q", got, want)
	}
	sum = loadgen.Summary{Requests: 3, P50: 1234567 * time.Nanosecond, P99: 2500 * time.Millisecond, Max: 3456 * time.Nanosecond}
	want = "3 requests, 0 failed, p50 1.23ms, p99 2.5s, max 3µs, 0 worker pids"
	if got := sum.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func mapsEqual[K comparable](a, b map[K]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
