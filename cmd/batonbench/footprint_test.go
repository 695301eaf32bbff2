package main

import (
	"reflect"
	"testing"
)

func TestParseCounts(t *testing.T) {
	tests := []struct {
		list string
		want []int
		ok   bool
	}{
		{"1,4,32", []int{1, 4, 32}, true},
		{"4", []int{4}, true},
		{" 1, 256", []int{1, 256}, true},
		{"0", nil, false},
		{"257", nil, false},
		{"1,,4", nil, false},
		{"four", nil, false},
		{"", nil, false},
	}
	for _, tt := range tests {
		got, err := parseCounts(tt.list)
		if (err == nil) != tt.ok || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseCounts(%q) = %v, %v; want %v, ok %v", tt.list, got, err, tt.want, tt.ok)
		}
	}
}

func TestFDKind(t *testing.T) {
	tests := map[string]string{
		"socket:[6722361]":        "socket",
		"pipe:[6723655]":          "pipe",
		"anon_inode:[pidfd]":      "pidfd",
		"anon_inode:[eventpoll]":  "eventpoll",
		"anon_inode:[eventfd]":    "eventfd",
		"anon_inode:inotify":      "inotify",
		"anon_inode:[]":           "anon_inode",
		"/dev/null":               "file",
		"/tmp/.app.pid (deleted)": "file",
	}
	for link, want := range tests {
		if got := fdKind(link); got != want {
			t.Errorf("fdKind(%q) = %q, want %q", link, got, want)
		}
	}
}
