package agent_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/agent"
)

// FuzzRackAnswers has a rack answer the agent with any status, content
// type and body: the agent must end (not hang, not panic), succeed only
// on a 2xx answer to everything, and neither log nor return its
// credential, nor more than a bounded part of what the rack said.
func FuzzRackAnswers(f *testing.F) {
	f.Add(200, "application/json", []byte(`{}`))
	f.Add(503, "text/plain", []byte("busy\n"))
	f.Add(403, "text/plain", []byte("forbidden"))
	f.Add(302, "text/html", []byte(`<a href="/elsewhere">moved</a>`))
	f.Add(200, "application/json", []byte(strings.Repeat("x", 1<<16)))
	f.Add(404, "application/json", []byte("\x00\xff\xfe{\"error\":"))
	const cred = "Zm9vYmFyLXNlY3JldC1jcmVkZW50aWFsLTAxMjM0NTY3"
	var mu sync.Mutex
	var status int
	var ctype string
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		s, c, b := status, ctype, body
		mu.Unlock()
		w.Header().Set("Content-Type", c)
		w.WriteHeader(s)
		w.Write(b)
	}))
	defer srv.Close()
	f.Fuzz(func(t *testing.T, s int, c string, b []byte) {
		if s < 100 || s > 999 {
			s = 100 + (s%900+900)%900
		}
		if s < 200 {
			s += 100 // 1xx answers are interim: the server sends its own final one
		}
		if strings.ContainsFunc(c, func(r rune) bool { return r < ' ' || r > '~' }) {
			c = "text/plain" // a header Go's server would send malformed is the transport's test, not this one
		}
		mu.Lock()
		status, ctype, body = s, c, b
		mu.Unlock()
		var logged strings.Builder
		var lmu sync.Mutex
		log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			lmu.Lock()
			defer lmu.Unlock()
			return logged.Write(p)
		}), nil))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := agent.Run(ctx, agent.Config{URL: srv.URL + "/agent/m1/" + cred, Root: fixture, Attempts: 1,
			Timeout: 2 * time.Second, Backoff: time.Millisecond, Logger: log})
		if ctx.Err() != nil {
			t.Fatalf("status %d: the agent did not end in time", s)
		}
		if ok := s/100 == 2; ok != (err == nil) {
			t.Fatalf("status %d: err %v", s, err)
		}
		lmu.Lock()
		out := logged.String()
		lmu.Unlock()
		if err != nil {
			out += err.Error()
			if len(err.Error()) > 16<<10 {
				t.Fatalf("status %d: an error of %d bytes", s, len(err.Error()))
			}
		}
		if strings.Contains(out, cred) {
			t.Fatalf("status %d: the credential was logged or returned:\n%s", s, out)
		}
	})
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }
