package main

import (
	"reflect"
	"testing"
)

func TestSplitWords(t *testing.T) {
	for in, want := range map[string][]string{
		"":                                 nil,
		"  consul  services register x ":   {"consul", "services", "register", "x"},
		`sh -c 'echo "$BATON_ADDRS" >> f'`: {"sh", "-c", `echo "$BATON_ADDRS" >> f`},
		`a "b c" d\ e ''`:                  {"a", "b c", "d e", ""},
		`"x\"y\\z\n"`:                      {`x"y\z\n`},
	} {
		got, err := splitWords(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("splitWords(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{`a 'b`, `a "b`, `a\`} {
		if _, err := splitWords(bad); err == nil {
			t.Errorf("splitWords(%q): no error", bad)
		}
	}
}
