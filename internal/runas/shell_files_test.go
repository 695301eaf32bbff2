//go:build !cgo || osusergo

package runas

import (
	"bufio"
	"strings"
	"testing"
)

func TestShellIn(t *testing.T) {
	const passwd = `# a comment: app:x:1:1::/:/bin/comment
+app:x:1:1::/:/bin/nis
-app:x:1:1::/:/bin/nis

root:x:0:0:root:/root:/bin/bash
  app:x:999:999:App,,,:/srv/app:/bin/sh  
broken:x:1
app:x:1000:1000::/home/app:/bin/second
noshell:x:5:5::/:
`
	for name, want := range map[string]string{"root": "/bin/bash", "app": "/bin/sh", "noshell": "", "broken": "", "missing": ""} {
		got, err := shellIn(bufio.NewScanner(strings.NewReader(passwd)), name)
		if err != nil || got != want {
			t.Errorf("shellIn(%s) = %q, %v; want %q", name, got, err, want)
		}
	}
}
