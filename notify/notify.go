// Package notify speaks the sd_notify(3) datagram protocol from both ends:
// Send for a process telling its manager about itself (a worker telling
// baton, or baton telling systemd), and Socket for the manager receiving
// those messages with the sender's PID checked by the kernel.
//
// Sending never blocks: a manager that stops reading loses messages, it
// does not stop the sender. The master's own socket (ListenPrivate) is a
// file in a private directory, repaired when something deletes it.
package notify

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
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

// Watchdog reports the keep-alive interval the process's manager asks
// for, as sd_watchdog_enabled(3) does: $WATCHDOG_USEC, a positive number
// of microseconds, when $WATCHDOG_PID is unset or names this process (a
// child that inherited them is not the one watched). The process should
// send WATCHDOG=1 at least every half of it; the manager restarts it when
// it stays silent for the whole interval.
func Watchdog() (time.Duration, bool) {
	if p := os.Getenv("WATCHDOG_PID"); p != "" && p != strconv.Itoa(os.Getpid()) {
		return 0, false
	}
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 || usec > int64(time.Duration(math.MaxInt64)/time.Microsecond) {
		return 0, false
	}
	return time.Duration(usec) * time.Microsecond, true
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
	dir     string      // the private directory ListenPrivate made for it
	opts    []Option    // ListenPrivate's, for Repair
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

// ListenPrivate creates the master's private NOTIFY_SOCKET: a file named
// notify.sock in a fresh directory of mode 0700 under the runtime
// directory ($RUNTIME_DIRECTORY, which systemd's RuntimeDirectory= sets,
// else $XDG_RUNTIME_DIR, else the temp dir), the way systemd's own
// /run/systemd/notify is a file. A file, not an abstract name, because
// some clients only connect to paths: Ruby's sd_notify gem, which puma
// uses, treats "@name" as a file name and fails.
//
// Only the master's user may reach the directory, unless the
// ReachableBy option names the user its workers run as.
//
// A file can be deleted under the master (a /tmp cleaner); Repair makes
// a new socket then. Where no such path fits in a socket address (a very
// long TMPDIR), or no directory can be made, the socket is abstract
// instead ("@baton-notify-PID-RANDOM"), which sd_notify(3),
// systemd-notify, Python's sdnotify, gunicorn and Go's listener package
// all understand. An abstract socket has no permissions: any process in
// the same network namespace may send to it. That is harmless, because
// Receive reports the sender's PID as the kernel vouches for it
// (SCM_CREDENTIALS) and the master heeds only its own workers.
func ListenPrivate(opts ...Option) (*Socket, error) {
	o := options(opts)
	if d := o.makeDir(len("/notify.sock")); d != "" {
		s, err := o.listenIn(d, "notify.sock")
		if err == nil {
			s.dir, s.opts = d, opts
			return s, nil
		}
		os.Remove(d)
	}
	s, err := listenAbstract()
	if err == nil {
		s.opts = opts
	}
	return s, err
}

// Option changes what ListenPrivate and NewDir make.
type Option func(*private)

type private struct {
	reachable bool
	uid, gid  int
}

func options(opts []Option) private {
	var o private
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// ReachableBy makes the private socket, or the sockets of a Dir,
// reachable by processes that run as uid and gid, another user than the
// master's: each socket file is owned by uid and gid with mode 0600, so
// that only uid (and root) may send to it, and its directory gets group
// gid and mode 0710, so that processes of gid may pass through it but not
// list, add or remove anything. The directory is made under the first of
// the runtime directory and the temp dir that uid and gid may pass
// through. An abstract socket, the fallback, needs nothing: anyone may
// send to it.
func ReachableBy(uid, gid int) Option {
	return func(p *private) { p.reachable, p.uid, p.gid = true, uid, gid }
}

// makeDir makes a fresh private directory under the runtime directory,
// with room left for a name of room bytes in a socket address, and
// returns it; "" where none fits or can be made.
func (p private) makeDir(room int) string {
	bases := []string{runtimeDir()}
	if p.reachable {
		// A root login's XDG_RUNTIME_DIR (/run/user/0) is root's alone.
		bases = append(bases, os.TempDir())
	}
	for _, base := range bases {
		if len(base)+len("/baton-0123456789")+room >= maxSocketPath || p.reachable && !p.canPass(base) {
			continue
		}
		d, err := os.MkdirTemp(base, "baton-")
		if err != nil {
			continue
		}
		if p.reachable && (os.Lchown(d, -1, p.gid) != nil || os.Chmod(d, 0o710) != nil) {
			os.Remove(d)
			continue
		}
		return d
	}
	return ""
}

// listenIn makes the socket name in the private directory dir: mode 0666
// (the directory keeps strangers out), or with ReachableBy the user's
// with mode 0600. bind(2) makes the file with the master's umask, which
// leaves it writable by the master's user alone until it is handed over.
func (p private) listenIn(dir, name string) (*Socket, error) {
	path := filepath.Join(dir, name)
	if !p.reachable {
		return Listen(path)
	}
	os.Remove(path)
	s, err := listen(path)
	if err != nil {
		return nil, err
	}
	err = os.Lchown(path, p.uid, p.gid)
	if err == nil {
		err = os.Chmod(path, 0o600)
	}
	if err != nil {
		s.conn.Close()
		os.Remove(path)
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	s.created, _ = os.Lstat(path)
	return s, nil
}

// canPass reports whether p's uid and gid may pass through dir and every
// directory above it, going by the permission bits (not by supplementary
// groups or access control lists).
func (p private) canPass(dir string) bool {
	if p.uid == 0 {
		return true
	}
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return false
		}
		st := fi.Sys().(*syscall.Stat_t)
		bit := os.FileMode(0o001)
		switch {
		case int(st.Uid) == p.uid:
			bit = 0o100
		case int(st.Gid) == p.gid:
			bit = 0o010
		}
		if fi.Mode().Perm()&bit == 0 {
			return false
		}
		if d == "/" || d == "." {
			return true
		}
	}
}

// maxSocketPath is the room for a path in a unix socket address
// (sun_path), less its terminating NUL.
const maxSocketPath = 107

func runtimeDir() string {
	if d, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":"); filepath.IsAbs(d) {
		return d
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(d) {
		return d
	}
	return os.TempDir()
}

func listenAbstract() (*Socket, error) {
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

// Intact reports whether s's address still reaches s: always for an
// abstract socket; for a file, whether the file at its path is still the
// one it made.
func (s *Socket) Intact() bool {
	if s.created == nil {
		return true
	}
	fi, err := os.Lstat(s.path)
	return err == nil && os.SameFile(fi, s.created)
}

// Repair returns s while it is intact, and otherwise a new private socket
// made as ListenPrivate made s, at a new path: the old directory may now be
// anyone's. The caller receives on the new one and closes s; processes
// given the old path can no longer reach the master.
func (s *Socket) Repair() (*Socket, error) {
	if s.Intact() {
		return s, nil
	}
	return ListenPrivate(s.opts...)
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
// is still the one it made, and so is the directory ListenPrivate made
// for it, if empty; nothing else is touched.
func (s *Socket) Close() error {
	// Compare while the socket still pins the file's inode.
	if s.Intact() && s.created != nil {
		os.Remove(s.path)
		if s.dir != "" {
			os.Remove(s.dir) // only if empty: it may be another's by now
		}
	}
	return s.conn.Close()
}

// Dir is a manager's private directory of notify sockets, one socket for
// each child (the master gives every worker its own, so that a message
// belongs to the worker whose socket it came on, whoever sent it): a
// directory of mode 0700 under the runtime directory ($RUNTIME_DIRECTORY,
// else $XDG_RUNTIME_DIR, else the temp dir), reachable by the master's
// user alone unless the ReachableBy option names the user its children
// run as. A Dir is not safe for concurrent use.
//
// If something deletes the directory (a /tmp cleaner), the next Listen
// makes a new one, as NewDir made the first, and Moved says so once.
// Where no path fits in a socket address (a very long TMPDIR) or no
// directory can be made, its sockets are abstract names instead, which
// sd_notify(3), systemd-notify, Python's sdnotify, gunicorn and Go's
// listener package all understand, but Ruby's sd_notify gem (puma) does
// not.
type Dir struct {
	opts    private
	path    string      // "" for abstract sockets
	created os.FileInfo // the directory made
	prefix  string      // abstract: "@baton-notify-PID-RANDOM-"
	seq     int
	moved   bool
}

// NewDir makes a private directory for notify sockets.
func NewDir(opts ...Option) (*Dir, error) {
	d := &Dir{opts: options(opts)}
	if err := d.make(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Dir) make() error {
	if p := d.opts.makeDir(len("/n4294967295.sock")); p != "" {
		if fi, err := os.Lstat(p); err == nil {
			d.path, d.created, d.prefix = p, fi, ""
			return nil
		}
		os.Remove(p)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("notify socket: %w", err)
	}
	d.path, d.created = "", nil
	d.prefix = fmt.Sprintf("@baton-notify-%d-%x-", os.Getpid(), b)
	return nil
}

// intact reports whether d's directory is still the one it made.
func (d *Dir) intact() bool {
	if d.created == nil {
		return true
	}
	fi, err := os.Lstat(d.path)
	return err == nil && os.SameFile(fi, d.created)
}

// Path is the directory, "" when its sockets are abstract.
func (d *Dir) Path() string { return d.path }

// Listen makes a new socket in d, first making d anew if it was deleted.
func (d *Dir) Listen() (*Socket, error) {
	if !d.intact() {
		if err := d.make(); err != nil {
			return nil, err
		}
		d.moved = true
	}
	d.seq++
	if d.path == "" {
		return listen(d.prefix + strconv.Itoa(d.seq))
	}
	return d.opts.listenIn(d.path, "n"+strconv.Itoa(d.seq)+".sock")
}

// Moved reports, once, that Listen had to make the directory anew.
func (d *Dir) Moved() bool {
	m := d.moved
	d.moved = false
	return m
}

// Close removes the directory if it is still the one d made and empty:
// close its sockets first.
func (d *Dir) Close() error {
	if d.created != nil && d.intact() {
		return os.Remove(d.path)
	}
	return nil
}

// SyscallConn gives access to s's descriptor, for an in-place upgrade of
// the manager to keep open across its exec; datagrams not yet received
// stay queued in the socket for the new image.
func (s *Socket) SyscallConn() (syscall.RawConn, error) { return s.conn.SyscallConn() }

// AdoptSocket takes back, in the new image, the notify socket at path
// handed over as descriptor fd.
func AdoptSocket(fd int, path string) (*Socket, error) {
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("notify socket %s handed over as fd %d: %w", path, fd, err)
	}
	conn, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("notify socket %s handed over as fd %d is not a unix socket", path, fd)
	}
	s := &Socket{conn: conn, path: path}
	if !strings.HasPrefix(path, "@") {
		s.created, _ = os.Lstat(path)
	}
	return s, nil
}

// DirState is a Dir as handed to the new image of an in-place upgrade.
type DirState struct {
	Path   string `json:"path,omitempty"`
	Prefix string `json:"prefix,omitempty"`
	Seq    int    `json:"seq"`
}

// Carry describes d for the new image.
func (d *Dir) Carry() DirState { return DirState{Path: d.path, Prefix: d.prefix, Seq: d.seq} }

// ResumeDir takes back, in the new image, the directory st describes, or
// makes a new one if it is gone.
func ResumeDir(st DirState, opts ...Option) (*Dir, error) {
	d := &Dir{opts: options(opts), path: st.Path, prefix: st.Prefix, seq: st.Seq}
	if d.path != "" {
		fi, err := os.Lstat(d.path)
		if err != nil || !fi.IsDir() {
			return NewDir(opts...)
		}
		d.created = fi
	}
	return d, nil
}
