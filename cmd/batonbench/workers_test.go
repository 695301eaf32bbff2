package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseSetups(t *testing.T) {
	tests := []struct {
		list string
		want []string
		err  string
	}{
		{"baton", []string{"baton"}, ""},
		{"go", []string{"baton", "baton-surge1"}, ""},
		{"node,python", []string{"baton-node", "pm2", "baton-uwsgi", "uwsgi"}, ""},
		{"pm2,node", []string{"pm2", "baton-node"}, ""},
		{"all,baton", []string{"baton", "baton-surge1", "baton-node", "pm2", "baton-uwsgi", "uwsgi"}, ""},
		{"baton,pm3", nil, `unknown setup "pm3"`},
		{"", nil, `unknown setup ""`},
	}
	for _, tt := range tests {
		got, err := parseSetups(tt.list)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseSetups(%q) = %v, %v; want an error with %q", tt.list, got, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseSetups(%q) = %v, %v; want %v", tt.list, got, err, tt.want)
		}
	}
	// Every group names known setups only, and "all" names each.
	all, _ := parseSetups("all")
	for _, s := range setups {
		if !strings.Contains(","+strings.Join(all, ",")+",", ","+s.name+",") {
			t.Errorf("group all lacks %s", s.name)
		}
	}
}
