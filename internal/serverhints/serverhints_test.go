package serverhints

import (
	"strings"
	"syscall"
	"testing"
)

func TestWarnings(t *testing.T) {
	for _, c := range []struct {
		name  string
		argv  []string
		drain syscall.Signal
		want  []string // a substring of each line, in order
	}{
		{"nginx on TERM", []string{"/usr/sbin/nginx", "-c", "nginx.conf"}, syscall.SIGTERM, []string{"nginx takes TERM as its fast stop", "--drain-signal QUIT"}},
		{"nginx on INT", []string{"nginx"}, syscall.SIGINT, []string{"nginx takes INT as its fast stop"}},
		{"nginx on QUIT", []string{"nginx"}, syscall.SIGQUIT, nil},
		{"nginx through env", []string{"env", "NGINX=3;", "nginx", "-p", "."}, syscall.SIGTERM, []string{"--drain-signal QUIT"}},
		{"nginx through nonblock and env", []string{"examples/nginx/nonblock", "env", "NGINX=3;", "nginx"}, syscall.SIGTERM, []string{"--drain-signal QUIT"}},
		{"nginx through env -u and --", []string{"/usr/bin/env", "-u", "X", "--", "nginx"}, syscall.SIGTERM, []string{"--drain-signal QUIT"}},
		{"haproxy on TERM", []string{"haproxy", "-Ws", "-f", "h.cfg"}, syscall.SIGTERM, []string{"HAProxy takes TERM as its hard stop", "--drain-signal USR1"}},
		{"haproxy on USR1", []string{"haproxy", "-Ws", "-f", "h.cfg"}, syscall.SIGUSR1, nil},
		{"unicorn on TERM", []string{"unicorn", "-c", "u.rb"}, syscall.SIGTERM, []string{"unicorn takes TERM as its quick stop", "--drain-signal QUIT"}},
		{"unicorn through bundle exec", []string{"bundle", "exec", "unicorn_rails"}, syscall.SIGTERM, []string{"--drain-signal QUIT"}},
		{"unicorn on QUIT", []string{"unicorn"}, syscall.SIGQUIT, nil},
		{"gunicorn on QUIT", []string{"gunicorn", "app:app"}, syscall.SIGQUIT, []string{"gunicorn takes QUIT as its quick stop", "--drain-signal TERM"}},
		{"gunicorn on TERM", []string{"gunicorn", "app:app"}, syscall.SIGTERM, nil},
		{"uwsgi on TERM", []string{"uwsgi", "--exit-on-reload"}, syscall.SIGTERM, []string{"uWSGI takes TERM as a brutal reload", "--drain-signal HUP"}},
		{"uwsgi-core on INT", []string{"/usr/bin/uwsgi-core", "--exit-on-reload"}, syscall.SIGINT, []string{"uWSGI takes INT as a brutal stop"}},
		{"uwsgi on HUP", []string{"uwsgi", "--protocol", "http", "--exit-on-reload"}, syscall.SIGHUP, nil},
		{"uwsgi on HUP without --exit-on-reload", []string{"uwsgi", "--master"}, syscall.SIGHUP, []string{"give uwsgi --exit-on-reload"}},
		{"uwsgi on HUP, configuration file", []string{"uwsgi", "--ini", "app.ini"}, syscall.SIGHUP, nil},
		{"uwsgi on HUP, configuration file as argument", []string{"uwsgi", "app.yaml"}, syscall.SIGHUP, nil},
		{"uwsgi with --http-socket ADDR", []string{"uwsgi", "--http-socket", "127.0.0.1:8000", "--exit-on-reload"}, syscall.SIGHUP, []string{"besides --http-socket 127.0.0.1:8000"}},
		{"uwsgi with --http-socket=ADDR on TERM", []string{"uwsgi", "--http-socket=:8000", "--exit-on-reload"}, syscall.SIGTERM, []string{"brutal reload", "besides --http-socket :8000"}},
		{"uwsgi with --http-socket fd://3", []string{"uwsgi", "--http-socket", "fd://3", "--exit-on-reload"}, syscall.SIGHUP, nil},
		{"an unknown server", []string{"./server", "nginx"}, syscall.SIGTERM, nil},
		{"a name that only contains one", []string{"/opt/nginx-wrapper"}, syscall.SIGTERM, nil},
		{"only env", []string{"env", "A=1"}, syscall.SIGTERM, nil},
		{"nothing", nil, syscall.SIGTERM, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Warnings(c.argv, c.drain)
			if len(c.want) == 0 {
				if len(got) != 0 {
					t.Fatalf("Warnings(%q, %v) = %q, want none", c.argv, c.drain, got)
				}
				return
			}
			all := strings.Join(got, "\n")
			for _, w := range c.want {
				if !strings.Contains(all, w) {
					t.Errorf("Warnings(%q, %v) = %q, want a line with %q", c.argv, c.drain, got, w)
				}
			}
			for _, line := range got {
				if strings.Contains(line, "\n") {
					t.Errorf("a warning spans lines: %q", line)
				}
			}
		})
	}
}

// Each recognised server's graceful stop, named in its own line, draws no
// warning of the same server: the advice never contradicts itself.
func TestAdviceIsQuiet(t *testing.T) {
	for _, c := range []struct {
		argv  []string
		drain syscall.Signal
	}{
		{[]string{"uwsgi", "--exit-on-reload"}, syscall.SIGHUP},
		{[]string{"unicorn"}, syscall.SIGQUIT},
		{[]string{"nginx"}, syscall.SIGQUIT},
		{[]string{"haproxy"}, syscall.SIGUSR1},
		{[]string{"gunicorn"}, syscall.SIGTERM},
	} {
		if got := Warnings(c.argv, c.drain); len(got) != 0 {
			t.Errorf("Warnings(%q, %v) = %q, want none", c.argv, c.drain, got)
		}
		for _, line := range Warnings(c.argv, syscall.SIGINT) {
			if c.drain != syscall.SIGINT && !strings.Contains(line, "--drain-signal "+name(c.drain)) {
				t.Errorf("Warnings(%q, INT): %q does not advise --drain-signal %s", c.argv, line, name(c.drain))
			}
		}
	}
}
