// Command endlessworker is an HTTP server that follows the child side of
// github.com/fvbock/endless's restart protocol as that library's source
// does it (the module proxy that baton's tests use does not serve the
// library itself):
//
//   - with ENDLESS_CONTINUE set, it takes its listener from fd 3 plus the
//     index of its address in ENDLESS_SOCKET_ORDER (0 without it);
//     otherwise it binds the address itself;
//   - it catches its signals first, and once it listens, if
//     ENDLESS_CONTINUE is set, it sends SIGTERM to its parent process;
//   - on SIGTERM or SIGINT it disables keep-alives, closes its listener and
//     exits once its requests are done.
//
// baton's tests run it with --protocol endless to prove that an endless app
// runs unchanged under baton.
package main

import (
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/baton-sh/baton/internal/restarterworker"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address, as the app would pass it to endless.ListenAndServe")
	flag.Parse()

	isChild := os.Getenv("ENDLESS_CONTINUE") != ""
	offset := 0
	if order := os.Getenv("ENDLESS_SOCKET_ORDER"); order != "" {
		for i, a := range strings.Split(order, ",") {
			if a == *addr {
				offset = i
			}
		}
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGINT, syscall.SIGTERM, syscall.SIGTSTP)

	var l net.Listener
	var err error
	if isChild {
		l, err = net.FileListener(os.NewFile(uintptr(3+offset), ""))
	} else {
		l, err = net.Listen("tcp", *addr)
	}
	if err != nil {
		log.Fatalf("endlessworker: %v", err)
	}

	srv := restarterworker.New("endless", l)
	if isChild {
		syscall.Kill(syscall.Getppid(), syscall.SIGTERM)
	}
	log.Println(os.Getpid(), *addr)

	done := make(chan struct{})
	go func() {
		for s := range sigs {
			if s == syscall.SIGTERM || s == syscall.SIGINT {
				log.Println(os.Getpid(), "Received", s)
				// endless's shutdown: keep-alives off (which closes
				// idle connections) and the listener closed; the app
				// exits once every connection has ended.
				srv.Shutdown()
				close(done)
				return
			}
			log.Println(os.Getpid(), "Received", s, "(ignored)")
		}
	}()
	if err := srv.Serve(); err != nil {
		log.Fatalf("endlessworker: %v", err)
	}
	<-done
	log.Println(os.Getpid(), "Serve() returning...")
}
