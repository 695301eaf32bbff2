package listener_test

import (
	"bufio"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/baton-sh/baton/listener"
)

// An HTTP server as a baton worker:
//
//	baton --listen http=tcp://127.0.0.1:8080 -- ./server
//
// Under baton, Listen returns the socket baton holds and passes to every
// generation; ServeHTTP says READY=1 and, on SIGTERM, drains: it stops
// accepting, answers every request its connections send (with
// Connection: close), closes those that stay silent, then returns.
// Started as plain ./server, the program binds 127.0.0.1:8080 itself and
// stops just as gracefully on SIGTERM.
func ExampleServeHTTP() {
	l, err := listener.Listen("http", "tcp", "127.0.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from generation %d\n", listener.Generation())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := listener.ServeHTTP(srv, l); err != nil {
		log.Fatal(err)
	}
	// Drained: every accepted request has been answered.
}

// A raw TCP server as a baton worker: a line echo server.
//
//	baton --listen echo=tcp://127.0.0.1:7000 -- ./echo
//
// It does by hand what ServeHTTP does for HTTP: Ready once it accepts, and
// on SIGTERM stop accepting, let each connection finish, exit. Closing its
// listener refuses nothing: baton and the next generation keep the socket
// open, and connections waiting in the kernel's queue go to them.
func ExampleListen() {
	l, err := listener.Listen("echo", "tcp", "127.0.0.1:7000")
	if err != nil {
		log.Fatal(err)
	}

	// A drain gives each connection this long to send what it still has;
	// a line it has sent by then is echoed before the connection closes.
	const drainGrace = time.Second
	var (
		mu       sync.Mutex
		conns    = map[net.Conn]bool{}
		draining bool
		wg       sync.WaitGroup
	)
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM)
	go func() {
		<-sigc
		listener.Stopping()
		l.Close() // ends the accept loop below
		mu.Lock()
		draining = true
		for c := range conns {
			c.SetReadDeadline(time.Now().Add(drainGrace))
		}
		mu.Unlock()
	}()

	if err := listener.Ready(); err != nil { // READY=1: baton drains the previous generation
		log.Fatal(err)
	}
	listener.Status("echoing")
	for {
		c, err := l.Accept()
		if errors.Is(err, net.ErrClosed) {
			break // draining
		}
		if err != nil {
			log.Fatal(err)
		}
		mu.Lock()
		conns[c] = true
		if draining {
			c.SetReadDeadline(time.Now().Add(drainGrace))
		}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadBytes('\n')
				if len(line) > 0 {
					if _, werr := c.Write(line); werr != nil {
						return
					}
				}
				if err != nil {
					return // the client is done, or the drain's deadline passed
				}
			}
		}()
	}
	wg.Wait() // every connection has finished
}

// A UDP server as a baton worker: it answers each datagram.
//
//	baton --listen dns=udp://127.0.0.1:5353 -- ./udpserver
//
// Datagrams waiting in the socket's buffer when it drains are not lost:
// baton and the next generation hold the same socket and read them.
func ExampleListenPacket() {
	c, err := listener.ListenPacket("dns", "udp", "127.0.0.1:5353")
	if err != nil {
		log.Fatal(err)
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM)
	go func() {
		<-sigc
		// Wakes the read below; the datagram in hand is still answered.
		c.SetReadDeadline(time.Now())
	}()

	if err := listener.Ready(); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break // draining
		}
		if err != nil {
			log.Fatal(err)
		}
		c.WriteTo(buf[:n], from)
	}
	c.Close()
}
