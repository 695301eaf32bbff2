//go:build linux

package host

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"time"
)

// Memory is the resident memory of worker pid's process tree (the worker
// and its descendants), in bytes. It follows /proc's children links, so
// its cost grows with the tree's processes and threads, not with the
// machine's (see walkTree).
func (h *Host) Memory(pid int) (int64, error) {
	var total int64
	err := walkTree(pid, func(_ int, statm []byte) {
		if f := bytes.Fields(statm); len(f) > 1 {
			pages, _ := strconv.ParseInt(string(f[1]), 10, 64)
			total += pages * int64(os.Getpagesize())
		}
	})
	return total, err
}

// walkTree calls visit with the /proc/PID/statm of pid and of each of its
// descendants, and fails only if pid itself cannot be read. For each
// process it reads its statm, lists its threads and reads each one's
// children, with bare system calls into one buffer: about 60µs of CPU
// for a Go worker of 7 threads, where filepath.Glob and os.ReadFile cost
// six times as much, most of an idle master's CPU with --max-memory.
func walkTree(pid int, visit func(pid int, statm []byte)) error {
	buf := make([]byte, 4096)
	var tids []string
	seen := map[int]bool{} // a process met twice while it changes parent
	todo := []int{pid}
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[p] {
			continue
		}
		seen[p] = true
		dir := "/proc/" + strconv.Itoa(p)
		statm, err := readProc(dir+"/statm", &buf)
		if err != nil {
			if p == pid {
				return err
			}
			continue // exited meanwhile
		}
		visit(p, statm)
		// A child is listed under the thread that forked it.
		tids = readNames(dir+"/task", buf, tids[:0])
		for _, tid := range tids {
			kids, err := readProc(dir+"/task/"+tid+"/children", &buf)
			if err != nil {
				continue // exited meanwhile
			}
			for _, k := range bytes.Fields(kids) {
				if n, err := strconv.Atoi(string(k)); err == nil {
					todo = append(todo, n)
				}
			}
		}
	}
	return nil
}

// readProc reads the /proc file at path into *buf, growing it as needed,
// and returns what it read. A read that does not fill the buffer is the
// end: /proc hands out all that fits at each read.
func readProc(path string, buf *[]byte) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(fd)
	n := 0
	for {
		if n == len(*buf) {
			*buf = append(*buf, make([]byte, len(*buf))...)
		}
		m, err := syscall.Read(fd, (*buf)[n:])
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return nil, err
		}
		n += m
		if m == 0 || n < len(*buf) {
			return (*buf)[:n], nil
		}
	}
}

// readNames appends the names in directory dir to names, using buf.
func readNames(dir string, buf []byte, names []string) []string {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return names // exited meanwhile
	}
	defer syscall.Close(fd)
	for {
		n, err := syscall.ReadDirent(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return names
		}
		_, _, names = syscall.ParseDirent(buf[:n], -1, names)
	}
}

// ProbeTimeout is how long a probe waits for a whole answer.
const ProbeTimeout = time.Second

// probeClient opens a connection for each probe and closes it after: a
// kept-alive connection would hold the worker that accepted it in its
// drain. An https probe does not verify the certificate, as a
// Kubernetes HTTPS probe does not: it asks the service baton runs whether
// it is healthy, and a self-signed certificate is no answer to that.
// A redirect is an answer (3xx, a failure), never followed.
var probeClient = &http.Client{
	Timeout: ProbeTimeout,
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
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
