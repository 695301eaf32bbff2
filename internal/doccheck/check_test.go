package doccheck

import (
	"fmt"
	"reflect"
	"testing"
	"testing/fstest"
)

// GitHub's anchors for headings, as its renderer makes them.
func TestSlug(t *testing.T) {
	for _, tc := range []struct{ heading, want string }{
		{"Try it", "try-it"},
		{"Deploy scripts: `reload --wait` and `status`", "deploy-scripts-reload---wait-and-status"},
		{"Deregister before stop, register after ready", "deregister-before-stop-register-after-ready"},
		{"gunicorn, and anything that speaks systemd", "gunicorn-and-anything-that-speaks-systemd"},
		{"endless and grace apps", "endless-and-grace-apps"},
		{"In containers: baton as PID 1", "in-containers-baton-as-pid-1"},
		{"Soak and faults", "soak-and-faults"},
		{"`--ready accepting`", "--ready-accepting"},
		{"The [worker](worker.md) contract", "the-worker-contract"},
		{"**Bold** and _emphasis_ and snake_case", "bold-and-emphasis-and-snake_case"},
		{"Über — café → naïve", "über--café--naïve"},
		{"C++ & Go: 100%!", "c--go-100"},
		{"Trailing hashes ##", "trailing-hashes"},
	} {
		doc := parse("# " + tc.heading + "\n")
		if len(doc.headings) != 1 {
			t.Fatalf("%q: headings %q", tc.heading, doc.headings)
		}
		if got := Slug(plainText(doc.headings[0])); got != tc.want {
			t.Errorf("slug of %q = %q, want %q", tc.heading, got, tc.want)
		}
	}
}

// fixture is a small repository the links of each case point into.
var fixture = fstest.MapFS{
	"README.md": {Data: []byte("# baton\n\n## Try it\n\n## Tests\n\n    scripts/test\n")},
	"docs/systemd.md": {Data: []byte(`# Under systemd

## Socket activation

## Socket activation

Setext heading
==============

A paragraph that is
a heading too
---

<a id="custom-anchor"></a>
`)},
	"docs/worker.md":                {Data: []byte("# The worker contract\n")},
	"scripts/systemd/app.service":   {Data: []byte("[Service]\n")},
	"scripts/test":                  {Data: []byte("#!/bin/sh\n")},
	"examples/node/server.js":       {Data: []byte("\n")},
	"examples/with space/worker.py": {Data: []byte("\n")},
}

// Each case is a docs/page.md in the fixture; want are the problems as
// "line: link", in order.
func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string
	}{
		{"file in the same directory", "[w](worker.md)\n", nil},
		{"file up a directory", "[unit](../scripts/systemd/app.service)\n", nil},
		{"directory", "[units](../scripts/systemd/) and [examples](../examples)\n", nil},
		{"anchor in another page", "[sa](systemd.md#socket-activation)\n", nil},
		{"repeated heading", "[second](systemd.md#socket-activation-1)\n", nil},
		{"setext headings", "[s](systemd.md#setext-heading) [p](systemd.md#a-paragraph-that-is-a-heading-too)\n", nil},
		{"html anchor", "[c](systemd.md#custom-anchor)\n", nil},
		{"anchor in this page", "# Page\n\n## Own heading\n\n[here](#own-heading)\n", nil},
		{"root-relative path", "[test](/scripts/test)\n", nil},
		{"escaped space", "[py](../examples/with%20space/worker.py)\n", nil},
		{"angle brackets and title", "[py](<../examples/with space/worker.py> \"title\")\n", nil},
		{"anchor into a file that is not markdown", "[l](../examples/node/server.js#L1)\n", nil},
		{"query", "[raw](../scripts/test?plain=1)\n", nil},
		{"external", "[go](https://go.dev/x) [m](mailto:a@b.c) <https://example.com>\n", nil},
		{"reference", "[w][worker] and [worker][]\n\n[worker]: worker.md\n", nil},
		{"html link", "<a href=\"worker.md\">w</a> <img src=\"../scripts/test\">\n", nil},
		{"link text over two lines", "see [Under\nsystemd](systemd.md#under-systemd)\n", nil},
		{"not links", "`[x](nowhere.md)` and --listen [NAME=]SPEC (not a link) and [flags]\n\n```\n[x](nowhere.md)\n```\n\n    [x](nowhere.md)\n\n<!-- [x](nowhere.md) -->\n", nil},
		{"code fence inside a list", "- item\n\n  ```sh\n  [x](nowhere.md)\n  ```\n", nil},

		{"missing file", "[gone](nowhere.md)\n", []string{"1: nowhere.md"}},
		{"missing directory", "x\n\n[d](../scripts/init.d/)\n", []string{"3: ../scripts/init.d/"}},
		{"wrong case", "[w](Worker.md)\n", []string{"1: Worker.md"}},
		{"missing anchor", "[sa](systemd.md#socket-activation-2)\n", []string{"1: systemd.md#socket-activation-2"}},
		{"anchor with capitals", "[sa](systemd.md#Socket-activation)\n", []string{"1: systemd.md#Socket-activation"}},
		{"missing anchor in this page", "# Page\n\nsee\n[here](#nothing-here)\n", []string{"4: #nothing-here"}},
		{"outside the repository", "[up](../../etc/passwd)\n", []string{"1: ../../etc/passwd"}},
		{"anchor into the README", "[tests](../README.md#tests) [no](../README.md#recipes)\n", []string{"1: ../README.md#recipes"}},
		{"image", "![pic](img/picture.png)\n", []string{"1: img/picture.png"}},
		{"image inside a link", "[![pic](img/picture.png)](worker.md)\n", []string{"1: img/picture.png"}},
		{"undefined reference", "[w][nowhere]\n", []string{"1: [nowhere]"}},
		{"broken reference definition", "[w][x]\n\n[x]: gone.md\n", []string{"3: gone.md"}},
		{"link in a table", "| a | b |\n|---|---|\n| [x](gone.md) | y |\n", []string{"3: gone.md"}},
		{"link in a list item", "- one\n- two, see\n  [x](gone.md)\n", []string{"3: gone.md"}},
		{"indented paragraph in a list", "- item\n\n    [x](gone.md)\n", []string{"3: gone.md"}},
		{"empty", "[x]()\n", []string{"1: "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{"docs/page.md": {Data: []byte(tc.doc)}}
			for k, v := range fixture {
				fsys[k] = v
			}
			problems, err := Check(fsys, []string{"docs/page.md"})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range problems {
				got = append(got, fmt.Sprintf("%d: %s", p.Line, p.Link))
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems %q, want %q\n%v", got, tc.want, problems)
			}
		})
	}
}

// Documents finds every markdown file but those in hidden directories
// and testdata.
func TestDocuments(t *testing.T) {
	fsys := fstest.MapFS{
		"README.md":             {},
		"docs/README.md":        {},
		"docs/cli.md":           {},
		"docs/guide/deeper.md":  {},
		".git/x.md":             {},
		"pkg/testdata/fixt.md":  {},
		"examples/README.md":    {},
		"examples/node/main.js": {},
	}
	got, err := Documents(fsys)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"README.md", "docs/README.md", "docs/cli.md", "docs/guide/deeper.md", "examples/README.md"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Documents = %q, want %q", got, want)
	}
}
