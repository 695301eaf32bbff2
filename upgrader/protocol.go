package upgrader

import (
	"encoding/gob"
	"fmt"
	"os"
	"strconv"

	"github.com/baton-sh/baton/internal/sockets"
)

// Protocol is how the sockets and the readiness signal pass between the
// master and a worker.
type Protocol int

const (
	// ProtocolSystemd is systemd's socket activation and sd_notify: the
	// sockets are fds 3, 4, … with LISTEN_FDS, LISTEN_FDNAMES and
	// LISTEN_PID; READY=1 arrives on NOTIFY_SOCKET.
	ProtocolSystemd Protocol = iota
	// ProtocolTableflip is the parent side of github.com/cloudflare/tableflip
	// (v1.2), so that an unmodified tableflip app is a worker: its
	// Upgrader.Listen gets the master's sockets and its Upgrader.Ready is the
	// readiness signal. See handoff.
	ProtocolTableflip
)

// ParseProtocol reads a --protocol value.
func ParseProtocol(s string) (Protocol, error) {
	switch s {
	case "systemd":
		return ProtocolSystemd, nil
	case "tableflip":
		return ProtocolTableflip, nil
	}
	return 0, fmt.Errorf("unknown protocol %q: want systemd or tableflip", s)
}

// tableflip's parent-child contract, as its child side reads it.
const (
	tableflipEnv   = "TABLEFLIP_HAS_PARENT_7DIU3=yes"
	tableflipReady = 42 // the byte the child writes on fd 3 when ready
)

// handoff is what one worker start passes beyond stdio: descriptors from
// fd 3 on and the environment, plus, for tableflip, the master's ends of
// the two pipes.
//
// tableflip's child finds, from fd 3: a pipe on which it writes one byte
// (42) when Ready is called; a pipe from which it reads the gob-encoded
// names of the files that follow ([kind, network, address] each, with kind
// "listener" or "packet"), and whose end-of-file later tells it that its
// parent has exited; then the files themselves from fd 5. The master keeps
// the names pipe open until the generation has taken over, so the app's
// WaitForParent returns once the previous generation is gone.
type handoff struct {
	files []uintptr
	env   []string

	readyR, readyW *os.File // tableflip: the child writes, the master reads
	namesR, namesW *os.File // tableflip: the master writes, the child reads
}

func (m *Master) newHandoff(n int) (*handoff, error) {
	o := &m.opts
	h := &handoff{}
	if o.Protocol != ProtocolTableflip {
		h.env = withGeneration(sockets.WorkerEnv(o.Env, o.Sockets, m.notifyPath), n)
		for _, s := range o.Sockets {
			h.files = append(h.files, s.File.Fd())
		}
		return h, nil
	}
	var err error
	if h.readyR, h.readyW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("tableflip ready pipe: %w", err)
	}
	if h.namesR, h.namesW, err = os.Pipe(); err != nil {
		h.readyR.Close()
		h.readyW.Close()
		return nil, fmt.Errorf("tableflip names pipe: %w", err)
	}
	h.files = []uintptr{h.readyW.Fd(), h.namesR.Fd()}
	for _, s := range o.Sockets {
		h.files = append(h.files, s.File.Fd())
	}
	h.env = append(withGeneration(sockets.WorkerEnv(o.Env, nil, m.notifyPath), n), tableflipEnv)
	return h, nil
}

// started runs in the master once the worker pid exists (or failed to
// start: pid 0). For tableflip it sends the names and waits for the ready
// byte, which becomes an event in the loop.
func (h *handoff) started(m *Master, pid int) {
	if h.readyR == nil {
		return
	}
	// The child has its own copies; the master's would keep the pipes
	// from ever reporting the child's exit.
	h.readyW.Close()
	h.namesR.Close()
	if pid == 0 {
		h.readyR.Close()
		h.namesW.Close()
		return
	}
	names := make([][]string, len(m.opts.Sockets))
	for i, s := range m.opts.Sockets {
		kind := "listener"
		if s.Spec.IsPacket() {
			kind = "packet"
		}
		names[i] = []string{kind, s.Spec.Network, s.Spec.Address}
	}
	go gob.NewEncoder(h.namesW).Encode(names) // a few bytes, well under a pipe's buffer
	go func() {
		defer h.readyR.Close()
		var b [1]byte
		if n, _ := h.readyR.Read(b[:]); n == 1 && b[0] == tableflipReady {
			m.send(readyByPipe{pid})
		}
	}()
}

// release tells a tableflip child that its "parent" is gone: the previous
// generation has drained, or the child itself has exited.
func (h *handoff) release() {
	if h != nil && h.namesW != nil {
		h.namesW.Close()
	}
}

func withGeneration(env []string, n int) []string {
	out := env[:0]
	for _, kv := range env {
		if len(kv) <= len(EnvGeneration) || kv[:len(EnvGeneration)+1] != EnvGeneration+"=" {
			out = append(out, kv)
		}
	}
	return append(out, EnvGeneration+"="+strconv.Itoa(n))
}
