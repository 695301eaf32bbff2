//go:build linux

package host

import (
	"encoding/gob"
	"fmt"
	"os"

	"github.com/baton-sh/baton/internal/sockets"
)

// tableflip's parent-child contract, as its child side reads it.
const (
	tableflipEnv   = "TABLEFLIP_HAS_PARENT_7DIU3=yes"
	tableflipReady = 42 // the byte the child writes on fd 3 when ready
)

// tableflip speaks the parent side of github.com/cloudflare/tableflip v1.2.
//
// Its child finds, from fd 3: a pipe on which it writes one byte (42) when
// Ready is called; a pipe from which it reads the gob-encoded names of the
// files that follow ([kind, network, address] each, with kind "listener" or
// "packet"), and whose end-of-file later tells it that its parent has
// exited; then the files themselves from fd 5. The master keeps the names
// pipe open until the generation has taken over, so the app's
// WaitForParent returns once the previous generation is gone.
type tableflip struct{}

func (t tableflip) handoff(s Start, socks []*sockets.Socket, notifySocket string) (*handoff, error) {
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("tableflip ready pipe: %w", err)
	}
	namesR, namesW, err := os.Pipe()
	if err != nil {
		readyR.Close()
		readyW.Close()
		return nil, fmt.Errorf("tableflip names pipe: %w", err)
	}
	names := make([][]string, len(socks))
	for i, s := range socks {
		kind := "listener"
		if s.Spec.IsPacket() {
			kind = "packet"
		}
		names[i] = []string{kind, s.Spec.Network, s.Spec.Address}
	}
	h := &handoff{
		files: []*os.File{readyW, namesR},
		env:   append(withWorker(sockets.WorkerEnv(s.Release.Env, nil, notifySocket), s), tableflipEnv),
	}
	for _, sock := range socks {
		h.files = append(h.files, sock.File)
	}
	h.started = func(pid int, ready func(int)) {
		// The child has its own copies; the master's would keep the
		// pipes from ever reporting the child's exit.
		readyW.Close()
		namesR.Close()
		if pid == 0 {
			readyR.Close()
			namesW.Close()
			return
		}
		go gob.NewEncoder(namesW).Encode(names) // a few bytes, well under a pipe's buffer
		go func() {
			defer readyR.Close()
			var b [1]byte
			if n, _ := readyR.Read(b[:]); n == 1 && b[0] == tableflipReady {
				ready(pid)
			}
		}()
	}
	// Closing the names pipe tells the child its "parent" is gone.
	h.release = func() { namesW.Close() }
	return h, nil
}
