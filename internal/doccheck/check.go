package doccheck

import (
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strings"
)

// Problem is a link that does not resolve.
type Problem struct {
	File string // the document, as passed to Check
	Line int    // the line the link starts on, from 1
	Link string // the destination as written, or [label] for a reference
	Why  string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s:%d: %s: %s", p.File, p.Line, p.Link, p.Why)
}

// Documents lists the markdown files (*.md) of fsys, leaving out hidden
// directories and testdata, in lexical order.
func Documents(fsys fs.FS) ([]string, error) {
	var docs []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return fs.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".md") {
			docs = append(docs, p)
		}
		return nil
	})
	return docs, err
}

// Check reports every link of the documents files (slash-separated paths
// in fsys, the repository's root) that does not resolve, in the order of
// files and of lines.
func Check(fsys fs.FS, files []string) ([]Problem, error) {
	c := checker{fsys: fsys, docs: map[string]parsed{}}
	var all []Problem
	for _, f := range files {
		doc, err := c.document(f)
		if err != nil {
			return nil, err
		}
		var problems []Problem
		defs := map[string]bool{}
		for _, d := range doc.defs {
			defs[d.label] = true
			if why := c.resolve(f, d.dest); why != "" {
				problems = append(problems, Problem{File: f, Line: d.line, Link: d.dest, Why: why})
			}
		}
		for _, b := range doc.blocks {
			for _, l := range links(b.text) {
				line := b.line + strings.Count(b.text[:l.offset], "\n")
				switch {
				case l.label != "" && !defs[l.label]:
					problems = append(problems, Problem{File: f, Line: line, Link: "[" + l.label + "]", Why: "no reference definition [" + l.label + "]: …"})
				case l.label != "":
				default:
					if why := c.resolve(f, l.dest); why != "" {
						problems = append(problems, Problem{File: f, Line: line, Link: l.dest, Why: why})
					}
				}
			}
		}
		sort.SliceStable(problems, func(i, j int) bool { return problems[i].Line < problems[j].Line })
		all = append(all, problems...)
	}
	return all, nil
}

type checker struct {
	fsys fs.FS
	docs map[string]parsed // each document is read once
}

type parsed struct {
	document
	anchors map[string]bool
}

func (c *checker) document(name string) (parsed, error) {
	if d, ok := c.docs[name]; ok {
		return d, nil
	}
	src, err := fs.ReadFile(c.fsys, name)
	if err != nil {
		return parsed{}, err
	}
	doc := parse(string(src))
	d := parsed{document: doc, anchors: doc.anchors()}
	c.docs[name] = d
	return d, nil
}

// external matches a destination with a scheme (https:, mailto:) or a
// network path (//host/…): not the repository's to check.
var external = regexp.MustCompile(`^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)`)

// resolve says why dest, written in the document from, does not resolve,
// or returns "" when it does.
func (c *checker) resolve(from, dest string) string {
	if dest == "" {
		return "empty link"
	}
	if external.MatchString(dest) {
		return ""
	}
	p, frag, _ := strings.Cut(dest, "#")
	p, _, _ = strings.Cut(p, "?")
	p, err := url.PathUnescape(p)
	if err != nil {
		return "bad escape in the path"
	}
	target := from
	switch {
	case strings.HasPrefix(p, "/"):
		target = path.Clean(strings.TrimLeft(p, "/"))
	case p != "":
		target = path.Join(path.Dir(from), p)
	}
	if target == ".." || strings.HasPrefix(target, "../") {
		return "points outside the repository"
	}
	fi, err := fs.Stat(c.fsys, target)
	if err != nil {
		return "no such file or directory: " + target
	}
	if frag == "" || fi.IsDir() || !strings.HasSuffix(target, ".md") {
		return ""
	}
	if f, err := url.PathUnescape(frag); err == nil {
		frag = f
	}
	doc, err := c.document(target)
	if err != nil {
		return err.Error()
	}
	if !doc.anchors[frag] {
		return "no heading or anchor #" + frag + " in " + target
	}
	return ""
}
