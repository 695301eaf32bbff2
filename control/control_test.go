package control_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/rs/zerolog"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/upgrader"
)

// master answers status with a fixed generation.
type master struct{}

func (master) Reload(upgrader.Trigger) <-chan upgrader.Result {
	c := make(chan upgrader.Result, 1)
	c <- upgrader.Result{Generation: 8}
	return c
}

func (master) Scale(int) <-chan upgrader.Result { return master{}.Reload(upgrader.TriggerControl) }
func (master) Upgrade() <-chan upgrader.UpgradeResult {
	c := make(chan upgrader.UpgradeResult, 1)
	c <- upgrader.UpgradeResult{Err: upgrader.ErrStopping}
	return c
}
func (master) Status() (upgrader.Status, error) { return upgrader.Status{Generation: 7}, nil }

// as runs f on a thread of this process that runs as uid and gid with
// the supplementary groups groups, as a client of another user would.
// The thread's credentials are changed for it alone (raw system calls,
// which Go and the C library do not spread to other threads), and it is
// never unlocked, so it ends with its goroutine.
func as(uid, gid int, groups []int, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		list := make([]uint32, len(groups)+1)
		for i, g := range groups {
			list[i] = uint32(g)
		}
		var p uintptr
		if len(groups) > 0 {
			p = uintptr(unsafe.Pointer(&list[0]))
		}
		for _, call := range [][4]uintptr{
			{syscall.SYS_SETGROUPS, uintptr(len(groups)), p, 0},
			{syscall.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)},
			{syscall.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)},
		} {
			if _, _, e := syscall.RawSyscall(call[0], call[1], call[2], call[3]); e != 0 {
				errc <- fmt.Errorf("system call %d: %w", call[0], e)
				return
			}
		}
		runtime.KeepAlive(list)
		errc <- f()
	}()
	return <-errc
}

// TestGroup: with Group, the control socket is mode 0660 and the group's;
// a member of the group gets answers, anyone else a line saying what to
// do. Without it, the socket is mode 0600.
func TestGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the socket away and to connect as other users")
	}
	// A directory anyone may pass, as a pidfile's would be.
	dir, err := os.MkdirTemp("", "control-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const deploy, member, stranger = 64401, 64402, 64403
	for _, tc := range []struct {
		name string
		opts []control.Option
		mode os.FileMode
		gid  int
	}{
		{"default", nil, 0o600, 0},
		{"group", []control.Option{control.Group(deploy)}, 0o660, deploy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".sock")
			s, err := control.Listen(path, zerolog.Nop(), tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			go s.Serve(master{})
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != os.ModeSocket|tc.mode || int(fi.Sys().(*syscall.Stat_t).Gid) != tc.gid {
				t.Errorf("socket: mode %v, group %d; want %v, group %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid, os.ModeSocket|tc.mode, tc.gid)
			}
			ask := func(uid, gid int, groups ...int) (control.Response, error) {
				var resp control.Response
				err := as(uid, gid, groups, func() error {
					var err error
					resp, _, err = control.Ask(path, control.Request{Command: "status"}, 5*time.Second)
					return err
				})
				return resp, err
			}
			// A member by a supplementary group, as a deploy user is.
			resp, err := ask(member, member, deploy)
			switch {
			case tc.gid != 0 && (err != nil || resp.Status == nil || resp.Status.Generation != 7):
				t.Errorf("a member of the group asked for status: %+v, %v", resp, err)
			case tc.gid == 0 && (err == nil || !strings.Contains(err.Error(), control.PermissionHint)):
				t.Errorf("another user asked a socket of mode 0600: %+v, %v; want the hint", resp, err)
			}
			want := fmt.Sprintf("no permission to use the control socket %s: %s", path, control.PermissionHint)
			if _, err := ask(stranger, stranger); err == nil || err.Error() != want {
				t.Errorf("a stranger asked for status: %v\nwant: %s", err, want)
			}
			if resp, err := ask(0, 0); err != nil || resp.Status == nil {
				t.Errorf("root asked for status: %+v, %v", resp, err)
			}
		})
	}
}
