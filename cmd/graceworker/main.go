// Command graceworker is an HTTP server that follows the child side of
// github.com/facebookgo/grace's (gracehttp, gracenet) restart protocol as
// that library's source does it (the module proxy that baton's tests use
// does not serve the library itself):
//
//   - it notes at start whether LISTEN_FDS is set and who its parent is;
//   - it takes the LISTEN_FDS listeners from fd 3 on and uses the one
//     whose address matches its own, or binds the address itself;
//   - once it serves, if it inherited its listeners and its parent is not
//     PID 1, it sends SIGTERM to its parent;
//   - on SIGTERM or SIGINT it closes its listener and exits once its
//     requests are done.
//
// baton's tests run it with --protocol grace to prove that a grace app
// runs unchanged under baton.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/baton-sh/baton/internal/restarterworker"
)

var (
	didInherit = os.Getenv("LISTEN_FDS") != ""
	ppid       = os.Getppid()
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve")
	flag.Parse()

	l, err := listen(*addr)
	if err != nil {
		log.Fatalf("graceworker: %v", err)
	}
	srv := restarterworker.New("grace", l)
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()

	sigs := make(chan os.Signal, 10)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR2)

	if didInherit && ppid != 1 {
		if err := syscall.Kill(ppid, syscall.SIGTERM); err != nil {
			log.Fatalf("graceworker: failed to close parent: %v", err)
		}
	}
	for {
		select {
		case err := <-served:
			if err != nil {
				log.Fatalf("graceworker: %v", err)
			}
		case s := <-sigs:
			if s == syscall.SIGUSR2 {
				log.Println("graceworker: USR2 (a grace app would restart itself; not under baton)")
				continue
			}
			// httpdown's Stop: the listener closed, idle connections
			// closed and no more keep-alive, then a wait for every
			// connection to end.
			signal.Stop(sigs)
			srv.Shutdown()
			log.Printf("Exiting pid %d.", os.Getpid())
			return
		}
	}
}

// listen is gracenet's Listen for TCP: an inherited listener with the same
// address, or a new one.
func listen(addr string) (net.Listener, error) {
	want, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, err
	}
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	for fd := 3; fd < 3+n; fd++ {
		f := os.NewFile(uintptr(fd), "listener")
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("error inheriting socket fd %d: %v", fd, err)
		}
		if got, ok := l.Addr().(*net.TCPAddr); ok && got.Port == want.Port && (got.IP.Equal(want.IP) || want.IP == nil) {
			return l, nil
		}
		l.Close()
	}
	return net.Listen("tcp", addr)
}
