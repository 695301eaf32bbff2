package host

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A binary that is there but cannot run, for what it needs is missing,
// is named as such, not as the kernel's "no such file or directory".
func TestWhyNotRun(t *testing.T) {
	dir := t.TempDir()
	self, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	const loader = "/lib64/ld-linux-x86-64.so.2"
	if !bytes.Contains(self, []byte(loader+"\x00")) {
		t.Skipf("/bin/true does not name %s as its loader", loader)
	}
	noLoader := filepath.Join(dir, "no-loader")
	if err := os.WriteFile(noLoader, bytes.Replace(self, []byte(loader), []byte("/lib64/ld-lost_-x86-64.so.2"), 1), 0o755); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!/no/such/sh -e\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{noLoader, "its dynamic loader /lib64/ld-lost_-x86-64.so.2 is missing"},
		{script, "its interpreter /no/such/sh is missing"},
	} {
		_, err := syscall.ForkExec(tc.path, []string{tc.path}, &syscall.ProcAttr{})
		if !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("exec %s: %v, want ENOENT, what the kernel says", tc.path, err)
		}
		img, err2 := OpenImage(tc.path)
		if err2 != nil {
			t.Fatal(err2)
		}
		got := img.whyNotRun(err)
		img.Close()
		if !strings.Contains(got.Error(), tc.want) {
			t.Errorf("whyNotRun(%s) = %q, want it to say %q", tc.path, got, tc.want)
		}
	}
	img, err := OpenImage("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if got := img.whyNotRun(syscall.EACCES); got != syscall.EACCES {
		t.Errorf("whyNotRun(EACCES) = %v, want it as it is", got)
	}
}
