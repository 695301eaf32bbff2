// Package loadgen sends bounded HTTP load to a server on loopback and
// records what the client saw: every request, every failure with its
// reason, every latency, and which worker PID answered. baton's demo,
// integration tests and benchmarks share it, so that "0 failed requests"
// means the same thing everywhere.
//
// A request fails when the client gets a transport error, a status other
// than 200, or a truncated body. Load uses net/http's client unchanged,
// including its standard retry of an idempotent request on a reused
// keep-alive connection that the server closed before answering: that is
// what every Go, browser and proxy client does, and it is what makes a
// server closing idle connections during a drain invisible to users.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config bounds and shapes the load.
type Config struct {
	// URL is requested with GET, or with POST when PostBody is set; it
	// must be on loopback.
	URL string
	// PostBody, when not nil, makes every request a POST of these bytes
	// (see post.go): the request a client never retries.
	PostBody []byte
	// NewConns loops each open a new TCP connection for every request.
	NewConns int
	// KeepAlive loops each reuse one keep-alive connection, redialled
	// when the server closes it.
	KeepAlive int
	// Rate is the total requests per second over all loops; 0 sends as
	// fast as each loop's previous request completes.
	Rate float64
	// MaxRequests stops the load after this many requests (default 200000).
	MaxRequests int
	// MaxDuration stops the load after this long (default 2 minutes).
	MaxDuration time.Duration
	// Timeout bounds one request (default 10s).
	Timeout time.Duration
}

// Sample is one request as the client saw it.
type Sample struct {
	Start   time.Time
	Latency time.Duration
	PID     int    // the answering worker, from "pid=N" in the body; 0 if absent
	Err     string // empty when the request succeeded
}

// Load is load in progress. Stop it to get the samples.
type Load struct {
	cfg      Config
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	started  time.Time
	issued   atomic.Int64
	done     atomic.Int64
	failed   atomic.Int64
	mu       sync.Mutex
	samples  []Sample
	stopOnce sync.Once
}

// Start begins the load; it runs until Stop or until a bound is reached.
func Start(cfg Config) (*Load, error) {
	if err := loopbackOnly(cfg.URL); err != nil {
		return nil, err
	}
	if cfg.NewConns+cfg.KeepAlive <= 0 {
		return nil, errors.New("loadgen: no client loops (NewConns and KeepAlive are 0)")
	}
	if cfg.MaxRequests <= 0 {
		cfg.MaxRequests = 200000
	}
	if cfg.MaxDuration <= 0 {
		cfg.MaxDuration = 2 * time.Minute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.MaxDuration)
	l := &Load{cfg: cfg, cancel: cancel, started: time.Now()}
	loops := cfg.NewConns + cfg.KeepAlive
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(loops) / cfg.Rate * float64(time.Second))
	}
	for i := 0; i < loops; i++ {
		tr := &http.Transport{
			DisableKeepAlives:   i < cfg.NewConns,
			MaxIdleConnsPerHost: 1,
			DialContext:         (&net.Dialer{Timeout: cfg.Timeout}).DialContext,
		}
		client := &http.Client{Transport: tr, Timeout: cfg.Timeout}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer tr.CloseIdleConnections()
			l.loop(ctx, client, interval, time.Duration(i)*interval/time.Duration(loops))
		}()
	}
	return l, nil
}

func (l *Load) loop(ctx context.Context, client *http.Client, interval, offset time.Duration) {
	var local []Sample
	defer func() {
		l.mu.Lock()
		l.samples = append(l.samples, local...)
		l.mu.Unlock()
	}()
	next := time.Now().Add(offset)
	for ctx.Err() == nil {
		if interval > 0 {
			if wait := time.Until(next); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			next = next.Add(interval)
		}
		if l.issued.Add(1) > int64(l.cfg.MaxRequests) {
			return
		}
		s := l.get(client)
		if s.Err != "" && ctx.Err() != nil {
			return // cut by Stop, not by the server
		}
		local = append(local, s)
		l.done.Add(1)
		if s.Err != "" {
			l.failed.Add(1)
		}
	}
}

var pidInBody = regexp.MustCompile(`pid=(\d+)`)

func (l *Load) get(client *http.Client) Sample {
	s := Sample{Start: time.Now()}
	resp, err := client.Do(l.request())
	if err == nil {
		var body []byte
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %s", resp.Status)
		}
		if m := pidInBody.FindSubmatch(body); m != nil {
			s.PID, _ = strconv.Atoi(string(m[1]))
		}
	}
	s.Latency = time.Since(s.Start)
	if err != nil {
		s.Err = err.Error()
	}
	return s
}

// Done is the number of requests completed so far.
func (l *Load) Done() int { return int(l.done.Load()) }

// Failed is the number of failed requests so far.
func (l *Load) Failed() int { return int(l.failed.Load()) }

// Stop ends the load, waits for the loops, and returns every sample in
// order of start time.
func (l *Load) Stop() Samples {
	l.stopOnce.Do(func() {
		l.cancel()
		l.wg.Wait()
		sort.Slice(l.samples, func(i, j int) bool { return l.samples[i].Start.Before(l.samples[j].Start) })
	})
	return Samples(l.samples)
}

// Samples are requests in order of start time.
type Samples []Sample

// Between returns the samples whose request started in [from, to).
func (s Samples) Between(from, to time.Time) Samples {
	lo := sort.Search(len(s), func(i int) bool { return !s[i].Start.Before(from) })
	hi := sort.Search(len(s), func(i int) bool { return !s[i].Start.Before(to) })
	if hi < lo { // to before from: an empty range
		hi = lo
	}
	return s[lo:hi]
}

// Summary condenses samples.
type Summary struct {
	Requests, Failed int
	// Errors counts failures by message.
	Errors        map[string]int
	P50, P99, Max time.Duration
	// PIDs counts answers by worker PID.
	PIDs map[int]int
}

// Summarize counts and ranks s.
func (s Samples) Summarize() Summary {
	sum := Summary{Requests: len(s), Errors: map[string]int{}, PIDs: map[int]int{}}
	lat := make([]time.Duration, 0, len(s))
	for _, x := range s {
		if x.Err != "" {
			sum.Failed++
			sum.Errors[x.Err]++
			continue
		}
		sum.PIDs[x.PID]++
		lat = append(lat, x.Latency)
	}
	if len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		sum.P50 = lat[len(lat)*50/100]
		sum.P99 = lat[len(lat)*99/100]
		sum.Max = lat[len(lat)-1]
	}
	return sum
}

// String is the summary on one line, with up to three error messages.
func (s Summary) String() string {
	out := fmt.Sprintf("%d requests, %d failed, p50 %s, p99 %s, max %s, %d worker pids",
		s.Requests, s.Failed, round(s.P50), round(s.P99), round(s.Max), len(s.PIDs))
	msgs := make([]string, 0, len(s.Errors))
	for m := range s.Errors {
		msgs = append(msgs, m)
	}
	sort.Strings(msgs)
	for i, m := range msgs {
		if i == 3 {
			out += fmt.Sprintf("; and %d more kinds of error", len(msgs)-3)
			break
		}
		out += fmt.Sprintf("; %d× %s", s.Errors[m], m)
	}
	return out
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}

// loopbackOnly refuses to aim load anywhere but this machine.
func loopbackOnly(rawURL string) error {
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	host := req.URL.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("loadgen: %s is not a loopback address; load is only sent to 127.0.0.1 or ::1", host)
}
