// Package notify speaks the sd_notify(3) datagram protocol from both ends:
// Send for a process telling its manager about itself (a worker telling
// baton, or baton telling systemd), and Socket for the manager receiving
// those messages with the sender's PID checked by the kernel.
//
// Sending never blocks: a manager that stops reading loses messages, it
// does not stop the sender. The master's own socket (ListenPrivate) has
// no file that could be deleted under it.
package notify

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
)

// MaxDatagram is the largest message Receive accepts, as in systemd.
const MaxDatagram = 4096

// Message is the set of KEY=VALUE assignments in one datagram, such as
// READY=1 or STATUS=serving. A later assignment of a key wins.
type Message map[string]string

// Parse splits a datagram into its assignments. Empty lines are skipped;
// a line that is not KEY=VALUE with a non-empty upper-case key makes Parse
// return an error along with every valid assignment it found.
func Parse(b []byte) (Message, error) {
	m := Message{}
	var bad []string
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !validKey(k) {
			bad = append(bad, fmt.Sprintf("%.40q", line))
			continue
		}
		m[k] = v
	}
	if bad != nil {
		return m, fmt.Errorf("malformed notify line(s): %s", strings.Join(bad, ", "))
	}
	return m, nil
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// Send delivers state to the manager named by $NOTIFY_SOCKET. It does
// nothing and returns nil when the variable is unset: the process then has
// no manager that listens. Like SendTo, it never blocks.
func Send(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	return SendTo(addr, state)
}

// ErrQueueFull is returned (wrapped) by SendTo when the receiver's queue
// is full: it has stopped reading, and the message was dropped.
var ErrQueueFull = errors.New("its queue is full (the manager is not reading it): message dropped")

// SendTo delivers state to the notify socket at addr; a leading '@' names
// an abstract socket. It never blocks: when the receiver's queue is full,
// the message is dropped and the error wraps ErrQueueFull.
//
// libsystemd's sd_notify waits in that case. A manager that has stopped
// reading (systemd's queue is a few datagrams long) would then freeze the
// sender, and for baton's master that means its whole lifecycle, TERM
// included; a lost STATUS= or READY=1 is the smaller harm.
func SendTo(addr, state string) error {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("notify %s: %w", addr, err)
	}
	defer syscall.Close(fd)
	for {
		err = syscall.Sendto(fd, []byte(state), syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL, &syscall.SockaddrUnix{Name: addr})
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EAGAIN):
		return fmt.Errorf("notify %s: %w", addr, ErrQueueFull)
	}
	return fmt.Errorf("notify %s: %w", addr, err)
}

// Datagram is one received message and the PID that sent it, as vouched
// for by the kernel (SCM_CREDENTIALS), not as claimed by the sender.
type Datagram struct {
	PID     int
	Message Message
	// Err is set when some lines could not be parsed; Message still holds
	// the valid ones.
	Err error
}

// Socket is a manager's receiving end: a unix datagram socket with
// SO_PASSCRED set so each message carries its sender's credentials.
type Socket struct {
	conn    *net.UnixConn
	path    string
	created os.FileInfo // the socket file Listen made; nil for an abstract socket
}

// Listen creates the socket at path, replacing a leftover file there. Its
// file is mode 0666: whoever may enter the directory may send.
func Listen(path string) (*Socket, error) {
	os.Remove(path)
	s, err := listen(path)
	if err != nil {
		return nil, err
	}
	// Workers may run as another user than the manager (a setuid helper,
	// say); the directory the socket lives in is what keeps strangers out.
	os.Chmod(path, 0o666)
	s.created, _ = os.Lstat(path)
	return s, nil
}

// ListenPrivate creates a socket in the abstract namespace under a fresh
// random name ("@baton-notify-PID-RANDOM"), the master's private
// NOTIFY_SOCKET. sd_notify(3), systemd-notify, Python's sdnotify and
// gunicorn, Node's sd-notify bindings and Go's listener package all read
// a leading '@' as such a name.
//
// No file is involved, so nothing on disk can go missing under the
// master (a /tmp cleaner deleting a socket file would cut every later
// worker off from its master), no TMPDIR is too long for a socket address,
// and Close has nothing to remove. The price: an abstract socket has no
// permissions, and any process in the same network namespace may send to
// it. That is harmless here because Receive reports the sender's PID as
// the kernel vouches for it (SCM_CREDENTIALS) and the master heeds only
// its own workers; a stranger can at most queue datagrams that the
// master reads and ignores. A worker that moves to another network
// namespace cannot reach the socket.
func ListenPrivate() (*Socket, error) {
	var b [8]byte
	var err error
	for range 3 {
		if _, err = rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("notify socket: %w", err)
		}
		var s *Socket
		s, err = listen(fmt.Sprintf("@baton-notify-%d-%x", os.Getpid(), b))
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, err
}

func listen(addr string) (*Socket, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	raw, err := conn.SyscallConn()
	if err == nil {
		ctlErr := raw.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
		})
		if ctlErr != nil {
			err = ctlErr
		}
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket: SO_PASSCRED: %w", err)
	}
	return &Socket{conn: conn, path: addr}, nil
}

// Path is the value to give a child as NOTIFY_SOCKET: a file path, or an
// abstract name starting with '@'.
func (s *Socket) Path() string { return s.path }

// Receive blocks for the next datagram. Descriptors a sender attaches
// (FDSTORE=1) are closed: baton keeps no fd store. A message without
// credentials cannot be attributed and is returned with PID 0.
func (s *Socket) Receive() (Datagram, error) {
	buf := make([]byte, MaxDatagram+1)
	oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred)+syscall.CmsgSpace(4*253))
	n, oobn, flags, _, err := s.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return Datagram{}, err
	}
	var d Datagram
	if msgs, perr := syscall.ParseSocketControlMessage(oob[:oobn]); perr == nil {
		for i := range msgs {
			if cred, cerr := syscall.ParseUnixCredentials(&msgs[i]); cerr == nil {
				d.PID = int(cred.Pid)
			}
			if fds, ferr := syscall.ParseUnixRights(&msgs[i]); ferr == nil {
				for _, fd := range fds {
					syscall.Close(fd)
				}
			}
		}
	}
	if n > MaxDatagram || flags&syscall.MSG_TRUNC != 0 {
		d.Message, d.Err = Message{}, errors.New("notify message longer than 4096 bytes ignored")
		return d, nil
	}
	d.Message, d.Err = Parse(buf[:n])
	return d, nil
}

// Close closes the socket. A socket file made by Listen is removed if it
// is still the one it made; nothing else is touched.
func (s *Socket) Close() error {
	// Compare while the socket still pins the file's inode.
	if s.created != nil {
		if fi, err := os.Lstat(s.path); err == nil && os.SameFile(fi, s.created) {
			os.Remove(s.path)
		}
	}
	return s.conn.Close()
}
