//go:build linux

package keeper

import "errors"

// The master speaks to its keeper over a SOCK_SEQPACKET socket pair, one
// message per datagram, in order. A message that adds a process carries
// the process's pidfd with it (SCM_RIGHTS), opened by the master while the
// process was its own unreaped child, so the keeper holds the process
// itself and never a number that could be reused.
//
// End of file on the socket means the master is gone, whatever ended it.
const (
	// OpWorker adds a worker's main process, the leader of its own
	// process group (with its pidfd and, when the master logs the
	// worker's output, the read ends of its stdout and stderr pipes, in
	// that order: the keeper reads them once the master is gone). A
	// keeper that does not know the pipes closes them.
	OpWorker byte = 'W'
	// OpStray adds a process the master adopted that is not a worker
	// (with its pidfd).
	OpStray byte = 'S'
	// OpForget says a process was reaped: the keeper drops it.
	OpForget byte = 'F'
)

// MsgSize is the size of every message.
const MsgSize = 9

// Msg is one message to the keeper.
type Msg struct {
	Op  byte
	PID int
	Gen int
}

// Encode gives m's wire form.
func (m Msg) Encode() []byte {
	b := make([]byte, MsgSize)
	b[0] = m.Op
	put32(b[1:], m.PID)
	put32(b[5:], m.Gen)
	return b
}

// Decode reads a message in wire form.
func Decode(b []byte) (Msg, error) {
	if len(b) != MsgSize {
		return Msg{}, errors.New("keeper message of the wrong size")
	}
	m := Msg{Op: b[0], PID: get32(b[1:]), Gen: get32(b[5:])}
	switch m.Op {
	case OpWorker, OpStray, OpForget:
	default:
		return Msg{}, errors.New("unknown keeper message")
	}
	if m.PID <= 0 {
		return Msg{}, errors.New("keeper message without a PID")
	}
	return m, nil
}

func put32(b []byte, v int) {
	u := uint32(v)
	b[0], b[1], b[2], b[3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
}

func get32(b []byte) int {
	return int(int32(uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24))
}
