package integration_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/baton-sh/baton/internal/envfile"
)

// envFiles are EnvironmentFile= files that systemd reads without a
// complaint, each exercising a corner of its syntax. "Z_" in each becomes
// a prefix of its own (Z0_, Z1_, …) so that all of them can be read by one
// unit and told apart.
var envFiles = []string{
	"Z_A=1\nZ_B=2\n",
	"  Z_A \t=  hello   world  \r\nZ_B=\r\n",
	"# comment\n; comment\n  # indented\nZ_A=1 # kept\nZ_B=1;2\n",
	"# a comment ending in a backslash \\\nZ_A=after\n",
	"words without an equals sign\nZ_A=1\n=nameless\n",
	"Z_A=$HOME ${PATH} `id`\nZ_B==x=y\n",
	"Z_A='  single  \\n \"quoted\" '\nZ_B='across\nlines'\n",
	`Z_A="a\"b\\c\$d` + "\\`e\\nf\\'g\"\n",
	"Z_A=\"across\n lines\"\nZ_B=\"joined\\\nhere\"\n",
	`Z_A=a\ b\\c\nd` + "\nZ_B=\\  \nZ_C=x\\   \n",
	"Z_A=one \\\n  two  \nZ_B=\\\nstart\n",
	"Z_A=x\\\r\nZ_B=y\n",
	`Z_A=x "y" 'z'` + "\n" + `Z_B="x"y` + "\n" + `Z_C="x" 'y'  "z" w v` + "\n",
	"Z_A=\"x\"  \t\nZ_B=  \"x\"\nZ_C=\"x\"#y\n",
	"Z_A=\"x\"\\\n'y\nZ_B=héllo ✓\n",
	"Z_A=first\nZ_A=second\n",
	"Z_A=no newline at the end\\",
}

// A file written for systemd's EnvironmentFile= gives baton exactly the
// variables systemd gives a service: systemd itself, in a container,
// reads every file of envFiles, and so does baton's --env-file parser.
func TestEnvFilesReadAsSystemdReadsThem(t *testing.T) {
	m := bootMachine(t)
	var files []envfile.File
	args := []string{"systemd-run", "--wait", "--pipe", "--quiet"}
	for i, content := range envFiles {
		path := fmt.Sprintf("/srv/envfiles/%d.env", i)
		host := filepath.Join(m.c.Root, path)
		if err := os.MkdirAll(filepath.Dir(host), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(host, []byte(strings.ReplaceAll(content, "Z_", fmt.Sprintf("Z%d_", i))), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, envfile.File{Path: host})
		args = append(args, "-p", "EnvironmentFile="+path)
	}
	ours := regexp.MustCompile(`^Z\d+_`)
	var systemd []string
	for _, kv := range strings.Split(m.must(append(args, "/usr/bin/env", "-0")...), "\x00") {
		if ours.MatchString(kv) {
			systemd = append(systemd, kv)
		}
	}
	baton, warnings, err := envfile.Environment{Files: files}.Build(nil)
	if err != nil || len(warnings) > 0 {
		t.Fatalf("baton: %v %q", err, warnings)
	}
	slices.Sort(systemd)
	slices.Sort(baton)
	if !slices.Equal(systemd, baton) {
		t.Errorf("systemd's environment:\n%q\nbaton's:\n%q", systemd, baton)
	}
	t.Logf("%d files, %d variables, read alike", len(envFiles), len(baton))
}
