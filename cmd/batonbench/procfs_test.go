package main

import (
	"os"
	"reflect"
	"testing"
)

func TestStatusKB(t *testing.T) {
	tests := []struct {
		name   string
		status string
		want   map[string]int
	}{
		{"empty", "", map[string]int{}},
		{
			"a real one, abridged",
			"Name:\tbaton\nUmask:\t0022\nState:\tS (sleeping)\nPid:\t4210\nVmPeak:\t 1240464 kB\n" +
				"VmRSS:\t   12700 kB\nRssAnon:\t    3000 kB\nRssFile:\t    9700 kB\nThreads:\t7\n" +
				"SigQ:\t0/7862\nvoluntary_ctxt_switches:\t150\n",
			map[string]int{"VmPeak": 1240464, "VmRSS": 12700, "RssAnon": 3000, "RssFile": 9700},
		},
		{"no unit, a bad number, no colon", "Threads:\t7\nVmRSS:\tmany kB\nRssAnon 3000 kB\n", map[string]int{}},
		{"zero, no final newline", "RssShmem:\t       0 kB", map[string]int{"RssShmem": 0}},
	}
	for _, tt := range tests {
		if got := statusKB([]byte(tt.status)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: statusKB = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestReadFootprintOfSelf(t *testing.T) {
	f, err := readFootprint(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if f.RssAnonKB <= 0 || f.VmRSSKB < f.RssAnonKB || f.FDs < 3 {
		t.Errorf("readFootprint(self) = %+v: want RssAnon > 0, VmRSS ≥ RssAnon and at least stdin, stdout, stderr", f)
	}
	if _, err := cpuTicks(os.Getpid()); err != nil {
		t.Errorf("cpuTicks(self): %v", err)
	}
}

func TestLinking(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if got := linking(self); got != "static" && got != "dynamic" {
		t.Errorf("linking(the test binary) = %q, want static or dynamic", got)
	}
	if got := linking("/proc/self/status"); got != "unknown" {
		t.Errorf("linking(a text file) = %q, want unknown", got)
	}
}

func TestParseSchedstat(t *testing.T) {
	tests := []struct {
		line string
		want uint64
		ok   bool
	}{
		{"244658555 220421209 193\n", 244658555, true},
		{"0 1925669 1", 0, true},
		{"18446744073709551615 0 0", 18446744073709551615, true},
		{"", 0, false},
		{"244658555 220421209\n", 0, false},
		{"-1 0 0", 0, false},
		{"x 0 0", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSchedstat([]byte(tt.line))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSchedstat(%q) = %d, %v; want %d, ok %v", tt.line, got, err, tt.want, tt.ok)
		}
	}
	if ns, err := cpuNS(os.Getpid()); err != nil || ns == 0 {
		t.Errorf("cpuNS(self) = %d, %v; want some CPU time", ns, err)
	}
}
