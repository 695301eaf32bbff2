// Command goworker is the smallest useful baton worker in Go: an HTTP
// server on the listener API. Under baton it serves on the inherited
// socket "http", says READY=1 once it accepts, and on SIGTERM drains
// (stops accepting, answers every request its connections send with
// Connection: close, closes those that stay silent) and exits 0. Started by hand, it binds -addr
// itself and behaves the same way.
//
// Under baton, from the repository root:
//
//	go build -o /tmp/goworker ./examples/goworker
//	baton --pidfile /tmp/goworker.pid --listen http=tcp://127.0.0.1:8080 -- /tmp/goworker
//	curl http://127.0.0.1:8080/               # gen=1 pid=…
//	kill -HUP $(cat /tmp/goworker.pid)        # gen=2, a new pid, no request lost
//
// Without baton:
//
//	go run ./examples/goworker -addr 127.0.0.1:8080
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/baton-sh/baton/listener"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to bind when started without baton")
	flag.Parse()

	// The socket baton passes as "http" (--listen http=…), or a new one on
	// addr when there is none.
	l, err := listener.Listen("http", "tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}

	gen := "none"
	if n := listener.Generation(); n > 0 { // under baton: 1, 2, …
		gen = strconv.Itoa(n)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "gen=%s pid=%d\n", gen, os.Getpid())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	log.Printf("goworker: gen %s pid %d serving on %s", gen, os.Getpid(), l.Addr())
	// Sends READY=1, serves until SIGTERM, then drains and returns nil.
	if err := listener.ServeHTTP(srv, l); err != nil {
		log.Fatal(err)
	}
	log.Printf("goworker: gen %s pid %d drained", gen, os.Getpid())
}
