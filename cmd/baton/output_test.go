package main

import (
	"strings"
	"testing"
)

func TestWorkerOutputFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string // "" for accepted
	}{
		{[]string{"--worker-output", "log"}, ""},
		{[]string{"--worker-output", "inherit"}, ""},
		{[]string{"--worker-output", "auto"}, ""},
		{[]string{"--worker-output-rate", "0"}, ""},
		{[]string{"--worker-output", "journal"}, `--worker-output "journal": want log, inherit or auto`},
		{[]string{"--worker-output-rate", "-5"}, "--worker-output-rate -5: want a count of lines a second, or 0 for no limit"},
	} {
		var f masterFlags
		_, err := f.parse(masterFlagSet(&f), append(tt.args, "--", "server"))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v, want it accepted", tt.args, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%q: %v, want %q", tt.args, err, tt.want)
		}
	}
}
