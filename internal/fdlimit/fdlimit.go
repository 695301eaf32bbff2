// Package fdlimit turns running out of file descriptors into an error
// that says what to do about it. A master with a low limit (ulimit -n, or
// systemd's LimitNOFILE=) meets EMFILE wherever it next opens something:
// binding a socket, accepting on the control socket, starting a worker.
package fdlimit

import (
	"errors"
	"fmt"
	"syscall"
)

// Explain returns err with advice added when it is EMFILE (this process is
// at its limit) or ENFILE (the whole system is), and err unchanged
// otherwise. The result still matches errors.Is(err, syscall.EMFILE).
func Explain(err error) error {
	var explained *limitError
	switch {
	case err == nil || errors.As(err, &explained):
		return err
	case errors.Is(err, syscall.EMFILE):
		return &limitError{err, "baton has no file descriptor left: raise its open-file limit (ulimit -n, or LimitNOFILE= under systemd)"}
	case errors.Is(err, syscall.ENFILE):
		return &limitError{err, "the system has no file descriptor left: raise fs.file-max or find what holds them"}
	}
	return err
}

type limitError struct {
	err    error
	advice string
}

func (e *limitError) Error() string { return fmt.Sprintf("%v: %s", e.err, e.advice) }
func (e *limitError) Unwrap() error { return e.err }
