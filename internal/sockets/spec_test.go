package sockets_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/baton-sh/baton/internal/sockets"
)

var parseSpecTests = []struct {
	in    string
	index int
	want  sockets.Spec
	str   string // String() of the result
}{
	// Every scheme, with the default name: scheme + index.
	{"tcp://127.0.0.1:8080", 0, sockets.Spec{Name: "tcp0", Network: "tcp", Address: "127.0.0.1:8080"}, "tcp0=tcp://127.0.0.1:8080"},
	{"tcp4://0.0.0.0:80", 1, sockets.Spec{Name: "tcp41", Network: "tcp4", Address: "0.0.0.0:80"}, "tcp41=tcp4://0.0.0.0:80"},
	{"tcp6://[::1]:443", 2, sockets.Spec{Name: "tcp62", Network: "tcp6", Address: "[::1]:443"}, "tcp62=tcp6://[::1]:443"},
	{"udp://127.0.0.1:53", 3, sockets.Spec{Name: "udp3", Network: "udp", Address: "127.0.0.1:53"}, "udp3=udp://127.0.0.1:53"},
	{"udp4://127.0.0.1:0", 0, sockets.Spec{Name: "udp40", Network: "udp4", Address: "127.0.0.1:0"}, "udp40=udp4://127.0.0.1:0"},
	{"udp6://[::]:65535", 7, sockets.Spec{Name: "udp67", Network: "udp6", Address: "[::]:65535"}, "udp67=udp6://[::]:65535"},
	{"unix:///run/app.sock", 12, sockets.Spec{Name: "unix12", Network: "unix", Address: "/run/app.sock"}, "unix12=unix:///run/app.sock"},

	// Hosts: empty (all addresses), localhost, IPv4, IPv6, IPv4-mapped.
	{"tcp://:8080", 0, sockets.Spec{Name: "tcp0", Network: "tcp", Address: ":8080"}, "tcp0=tcp://:8080"},
	{"tcp://localhost:0", 0, sockets.Spec{Name: "tcp0", Network: "tcp", Address: "localhost:0"}, "tcp0=tcp://localhost:0"},
	{"tcp://[::ffff:10.0.0.1]:1", 0, sockets.Spec{Name: "tcp0", Network: "tcp", Address: "[::ffff:10.0.0.1]:1"}, "tcp0=tcp://[::ffff:10.0.0.1]:1"},
	{"tcp://[::]:0", 0, sockets.Spec{Name: "tcp0", Network: "tcp", Address: "[::]:0"}, "tcp0=tcp://[::]:0"},

	// NAME= prefix.
	{"web=tcp://127.0.0.1:8080", 5, sockets.Spec{Name: "web", Network: "tcp", Address: "127.0.0.1:8080"}, "web=tcp://127.0.0.1:8080"},
	{"metrics_v2.x-y=udp://127.0.0.1:9", 0, sockets.Spec{Name: "metrics_v2.x-y", Network: "udp", Address: "127.0.0.1:9"}, "metrics_v2.x-y=udp://127.0.0.1:9"},
	{"~!?=unix:///a", 0, sockets.Spec{Name: "~!?", Network: "unix", Address: "/a"}, "~!?=unix:///a"},
	{strings.Repeat("n", 255) + "=tcp://:1", 0, sockets.Spec{Name: strings.Repeat("n", 255), Network: "tcp", Address: ":1"}, strings.Repeat("n", 255) + "=tcp://:1"},

	// An '=' after "://" belongs to the address, not to a name.
	{"unix:///tmp/a=b.sock", 1, sockets.Spec{Name: "unix1", Network: "unix", Address: "/tmp/a=b.sock"}, "unix1=unix:///tmp/a=b.sock"},
	{"s=unix:///tmp/a=b.sock", 1, sockets.Spec{Name: "s", Network: "unix", Address: "/tmp/a=b.sock"}, "s=unix:///tmp/a=b.sock"},

	// unix: relative paths and ?mode= in octal, with or without a leading 0.
	{"unix://app.sock", 0, sockets.Spec{Name: "unix0", Network: "unix", Address: "app.sock"}, "unix0=unix://app.sock"},
	{"unix:///run/app.sock?mode=0660", 0, sockets.Spec{Name: "unix0", Network: "unix", Address: "/run/app.sock", Mode: 0o660}, "unix0=unix:///run/app.sock?mode=0660"},
	{"unix:///run/app.sock?mode=600", 0, sockets.Spec{Name: "unix0", Network: "unix", Address: "/run/app.sock", Mode: 0o600}, "unix0=unix:///run/app.sock?mode=0600"},
	{"unix:///run/app.sock?mode=777", 0, sockets.Spec{Name: "unix0", Network: "unix", Address: "/run/app.sock", Mode: 0o777}, "unix0=unix:///run/app.sock?mode=0777"},
	{"unix:///run/app.sock?mode=7", 0, sockets.Spec{Name: "unix0", Network: "unix", Address: "/run/app.sock", Mode: 0o7}, "unix0=unix:///run/app.sock?mode=0007"},
	{"app=unix:///run/app.sock?mode=0", 0, sockets.Spec{Name: "app", Network: "unix", Address: "/run/app.sock"}, "app=unix:///run/app.sock"},
	{"unix:///run/app.sock?", 0, sockets.Spec{Name: "unix0", Network: "unix", Address: "/run/app.sock"}, "unix0=unix:///run/app.sock"},
}

func TestParseSpec(t *testing.T) {
	for _, tt := range parseSpecTests {
		got, err := sockets.ParseSpec(tt.in, tt.index)
		if err != nil {
			t.Errorf("ParseSpec(%q, %d): %v", tt.in, tt.index, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseSpec(%q, %d) = %#v, want %#v", tt.in, tt.index, got, tt.want)
		}
		if s := got.String(); s != tt.str {
			t.Errorf("ParseSpec(%q, %d).String() = %q, want %q", tt.in, tt.index, s, tt.str)
		}
		// String gives a form ParseSpec reads back to the same spec,
		// whatever the index: the name is now explicit.
		again, err := sockets.ParseSpec(got.String(), tt.index+100)
		if err != nil {
			t.Errorf("ParseSpec(%q) (String of %q): %v", got.String(), tt.in, err)
		} else if again != got {
			t.Errorf("round trip of %q: got %#v, want %#v", tt.in, again, got)
		}
	}
}

func TestParseSpecErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string // in the error message
	}{
		{"", "want SCHEME://ADDRESS"},
		{"127.0.0.1:8080", "want SCHEME://ADDRESS"},
		{"tcp:127.0.0.1:8080", "want SCHEME://ADDRESS"},
		{"web=127.0.0.1:8080", "want SCHEME://ADDRESS"},
		{"http://127.0.0.1:80", `unknown scheme "http"`},
		{"TCP://127.0.0.1:80", `unknown scheme "TCP"`},
		{"unixgram:///run/a.sock", `unknown scheme "unixgram"`},
		{"://127.0.0.1:80", `unknown scheme ""`},

		// Names.
		{"=tcp://127.0.0.1:80", "name must be 1 to 255 characters"},
		{strings.Repeat("n", 256) + "=tcp://:1", "name must be 1 to 255 characters"},
		{"my web=tcp://:1", "printable ASCII"},
		{"a\tb=tcp://:1", "printable ASCII"},
		{"caf\u00e9=tcp://:1", "printable ASCII"},
		{"a\x7f=tcp://:1", "printable ASCII"},

		// Hosts and ports.
		{"tcp://127.0.0.1", "want HOST:PORT"},
		{"tcp://", "want HOST:PORT"},
		{"tcp://::1:80", "want HOST:PORT"},
		{"tcp://127.0.0.1:", `port ""`},
		{"tcp://127.0.0.1:http", `port "http"`},
		{"tcp://127.0.0.1:65536", `port "65536"`},
		{"tcp://127.0.0.1:-1", `port "-1"`},
		{"tcp://127.0.0.1:+80", `port "+80"`},
		{"tcp://127.0.0.1:00", `port "00"`},
		{"udp://127.0.0.1:99999", `port "99999"`},
		{"tcp://example.com:80", `host "example.com" must be an IP address or localhost`},
		{"tcp6://ip6-localhost:80", `host "ip6-localhost" must be an IP address or localhost`},
		{"udp://256.0.0.1:53", `host "256.0.0.1" must be an IP address or localhost`},
		{"tcp://[fe80::1%lo]:80", `must be an IP address or localhost`},
		{"tcp://127.0.0.1:80?mode=0600", "options are only understood for unix sockets"},
		{"udp://127.0.0.1:80?", "options are only understood for unix sockets"},

		// unix.
		{"unix://", "unix socket needs a path"},
		{"unix://?mode=0600", "unix socket needs a path"},
		{"unix:///a.sock?mode=0800", `mode "0800" is not an octal permission`},
		{"unix:///a.sock?mode=1777", `mode "1777" is not an octal permission`},
		{"unix:///a.sock?mode=rw", `mode "rw" is not an octal permission`},
		{"unix:///a.sock?mode=-1", `mode "-1" is not an octal permission`},
		{"unix:///a.sock?mode=0o600", `mode "0o600" is not an octal permission`},
		{"unix:///a.sock?owner=www", `unknown option "owner"`},
		{"unix:///a.sock?mode=0600&group=1", `unknown option "group"`},
		{"unix:///a.sock?mode=%zz", "bad query"},
		{"unix:///a.sock?mode=0600;x", "bad query"},
	}
	for _, tt := range tests {
		got, err := sockets.ParseSpec(tt.in, 0)
		if err == nil {
			t.Errorf("ParseSpec(%q) = %#v, want error containing %q", tt.in, got, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseSpec(%q) error %q does not contain %q", tt.in, err, tt.want)
		}
		// The message names the flag value the user has to fix.
		if want := fmt.Sprintf("listen %q: ", tt.in); !strings.HasPrefix(err.Error(), want) {
			t.Errorf("ParseSpec(%q) error %q does not start with %q", tt.in, err, want)
		}
		if got != (sockets.Spec{}) {
			t.Errorf("ParseSpec(%q) returned %#v along with its error, want the zero Spec", tt.in, got)
		}
	}
}

func TestSpecIsPacket(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"tcp://:1", false},
		{"tcp4://:1", false},
		{"tcp6://:1", false},
		{"udp://:1", true},
		{"udp4://:1", true},
		{"udp6://:1", true},
		{"unix:///a.sock", false},
	}
	for _, tt := range tests {
		s, err := sockets.ParseSpec(tt.in, 0)
		if err != nil {
			t.Fatalf("ParseSpec(%q): %v", tt.in, err)
		}
		if got := s.IsPacket(); got != tt.want {
			t.Errorf("ParseSpec(%q).IsPacket() = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func FuzzParseSpec(f *testing.F) {
	for _, tt := range parseSpecTests {
		f.Add(tt.in, tt.index)
	}
	f.Add("x=unix:///a?mode=0600&mode=0700", 0)
	f.Add("unix://a://b", 3)
	f.Add("tcp://[127.0.0.1]:80", 0)
	f.Add("tcp://127.0.0.1:0080", -1)
	f.Fuzz(func(t *testing.T, in string, index int) {
		spec, err := sockets.ParseSpec(in, index)
		if err != nil {
			return
		}
		if spec.Name == "" || spec.Network == "" || spec.Address == "" {
			t.Fatalf("ParseSpec(%q, %d) = %#v: empty field without an error", in, index, spec)
		}
		if spec.Mode&^0o777 != 0 || (spec.Mode != 0 && spec.Network != "unix") {
			t.Fatalf("ParseSpec(%q, %d) = %#v: bad mode", in, index, spec)
		}
		s := spec.String()
		again, err := sockets.ParseSpec(s, index+1)
		if err != nil {
			t.Fatalf("ParseSpec(%q, %d) = %#v, but its String %q does not parse: %v", in, index, spec, s, err)
		}
		if again != spec {
			t.Fatalf("ParseSpec(%q, %d) = %#v, but its String %q parses to %#v", in, index, spec, s, again)
		}
		if again.String() != s {
			t.Fatalf("String not stable: %q then %q", s, again.String())
		}
	})
}
