// Package notify speaks the sd_notify(3) datagram protocol from both ends:
// Send for a process telling its manager about itself (a worker telling
// baton, or baton telling systemd), and Socket for the manager receiving
// those messages with the sender's PID checked by the kernel.
package notify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
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
// no manager that listens.
func Send(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	return SendTo(addr, state)
}

// SendTo delivers state to the notify socket at addr; a leading '@' names
// an abstract socket.
func SendTo(addr, state string) error {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify %s: %w", addr, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify %s: %w", addr, err)
	}
	return nil
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
	conn *net.UnixConn
	path string
}

// Listen creates the socket at path, replacing a leftover file there.
func Listen(path string) (*Socket, error) {
	os.Remove(path)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
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
	// Workers may run as another user than the master (a setuid helper,
	// say); the directory the socket lives in is what keeps strangers out.
	os.Chmod(path, 0o666)
	return &Socket{conn: conn, path: path}, nil
}

// ListenDir creates a private directory (mode 0700) under dir (or the
// system's temp dir when empty) and a socket named notify.sock inside it.
// Close removes both.
func ListenDir(dir string) (*Socket, error) {
	d, err := os.MkdirTemp(dir, "baton-")
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	s, err := Listen(filepath.Join(d, "notify.sock"))
	if err != nil {
		os.Remove(d)
		return nil, err
	}
	return s, nil
}

// Path is the value to give a child as NOTIFY_SOCKET.
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

// Close closes the socket and removes its file, and the private directory
// ListenDir made for it.
func (s *Socket) Close() error {
	err := s.conn.Close()
	os.Remove(s.path)
	if dir := filepath.Dir(s.path); strings.HasPrefix(filepath.Base(dir), "baton-") {
		os.Remove(dir)
	}
	return err
}
