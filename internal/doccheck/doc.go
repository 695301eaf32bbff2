// Package doccheck keeps baton's markdown documents linked together: it
// finds every link in a document and reports those that do not resolve
// the way GitHub renders them.
//
// A relative link must name a file or directory of the repository (a
// path starting with / is taken from the repository's root, as GitHub
// does), and never one outside it. A #fragment into a markdown document,
// the linking one included, must be the anchor of one of its headings
// (GitHub's slug of the heading's text, with -1, -2, … for repeats) or of
// an HTML element with that id or name. A reference link [text][label]
// must have its [label]: definition. Links with a scheme (https:, mailto:)
// are not followed, and neither are fragments into files that are not
// markdown (a source file's #L10).
//
// Links are looked for where GitHub would render them: not in fenced or
// indented code blocks, nor in code spans. The scanner is not a full
// CommonMark parser; it knows the constructs baton's documents use.
//
// The package's tests run Check over every markdown file of the
// repository, so a page moved or a heading renamed without its links
// fails go test ./... ; they also hold the manual's index, docs/README.md,
// to link every page of docs/, and README.md's ## Tests section to start
// with the test command, scripts/test; and docs/monitoring.md's table of
// log events to list exactly the events baton's code logs.
package doccheck
