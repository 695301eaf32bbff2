package loadgen

import (
	"bytes"
	"net/http"
)

// request is the request every loop sends: a GET of the URL, or a POST of
// PostBody to it.
//
// A POST shows what a GET hides. net/http's client, like browsers and
// proxies, resends an idempotent request whose keep-alive connection the
// server closed before answering, so a server that closes a connection
// under a request it has already read loses nothing a GET can count. A
// POST is never resent (it is not idempotent and carries no
// Idempotency-Key): every request a draining server drops or cuts is a
// failure here.
func (l *Load) request() *http.Request {
	if l.cfg.PostBody == nil {
		req, _ := http.NewRequest(http.MethodGet, l.cfg.URL, nil)
		return req
	}
	req, _ := http.NewRequest(http.MethodPost, l.cfg.URL, bytes.NewReader(l.cfg.PostBody))
	req.Header.Set("Content-Type", "application/octet-stream")
	return req
}
