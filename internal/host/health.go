//go:build linux

package host

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Memory is the resident memory of worker pid's process tree (the worker
// and its descendants), in bytes. It follows /proc's children links, so
// its cost grows with the tree's processes and threads, not with the
// machine's.
func (h *Host) Memory(pid int) (int64, error) {
	var total int64
	seen := map[int]bool{}
	todo := []int{pid}
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[p] {
			continue
		}
		seen[p] = true
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/statm")
		if err != nil {
			if p == pid {
				return 0, err
			}
			continue // exited meanwhile
		}
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			total += pages * int64(os.Getpagesize())
		}
		tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(p) + "/task/*/children")
		for _, t := range tasks {
			kids, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for _, k := range bytes.Fields(kids) {
				if n, err := strconv.Atoi(string(k)); err == nil {
					todo = append(todo, n)
				}
			}
		}
	}
	return total, nil
}

// ProbeTimeout is how long a probe waits for a whole answer.
const ProbeTimeout = time.Second

// probeClient opens a connection for each probe and closes it after: a
// kept-alive connection would hold the worker that accepted it in its
// drain.
var probeClient = &http.Client{
	Timeout:   ProbeTimeout,
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// Probe sends one GET to url beside the loop and reports with done
// whether it answered 2xx within ProbeTimeout, and otherwise what it did.
func (h *Host) Probe(url string, done func(ok bool, detail string)) {
	go func() {
		resp, err := probeClient.Get(url)
		if err != nil {
			done(false, err.Error())
			return
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			done(false, fmt.Sprintf("%d from %s", resp.StatusCode, url))
			return
		}
		done(true, "")
	}()
}
