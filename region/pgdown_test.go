package region_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/region"
)

// pgLink is the region's way to PostgreSQL: a TCP relay the test can cut,
// as a crashed server or a network gone would, and mend.
type pgLink struct {
	t      *testing.T
	addr   string // where the region connects
	target string // the PostgreSQL server

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func newPGLink(t *testing.T, target string) *pgLink {
	l := &pgLink{t: t, target: target, conns: map[net.Conn]bool{}}
	l.up("127.0.0.1:0")
	t.Cleanup(l.down)
	return l
}

func (l *pgLink) up(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		l.t.Fatal(err)
	}
	l.mu.Lock()
	l.ln, l.addr = ln, ln.Addr().String()
	l.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go l.relay(c)
		}
	}()
}

func (l *pgLink) relay(c net.Conn) {
	s, err := net.Dial("tcp", l.target)
	if err != nil {
		c.Close()
		return
	}
	l.mu.Lock()
	if l.ln == nil { // cut meanwhile
		l.mu.Unlock()
		c.Close()
		s.Close()
		return
	}
	l.conns[c], l.conns[s] = true, true
	l.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(s, c); done <- struct{}{} }()
	go func() { io.Copy(c, s); done <- struct{}{} }()
	<-done
	c.Close()
	s.Close()
	l.mu.Lock()
	delete(l.conns, c)
	delete(l.conns, s)
	l.mu.Unlock()
}

// down refuses new connections and cuts the open ones.
func (l *pgLink) down() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		l.ln.Close()
		l.ln = nil
	}
	for c := range l.conns {
		c.Close()
	}
}

// TestPostgresDownIs503: with PostgreSQL out of reach (its connections cut,
// new ones refused), the API answers 503 with Retry-After and a JSON
// error saying the database is unavailable, on every kind of request,
// instead of 500; /readyz says not ready; once PostgreSQL is back, the
// same requests succeed.
func TestPostgresDownIs503(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	link := newPGLink(t, u.Host)
	u.Host = link.addr
	q := u.Query()
	q.Set("connect_timeout", "2")
	u.RawQuery = q.Encode()
	h := startRegionOn(t, dbURL, u.String(), func(*region.Config) {}, testLogger())
	api, token := h.api, h.token
	requests := []struct{ method, path, body string }{
		{"GET", "/api/v1/machines", ""},
		{"GET", "/api/v1/racks", ""},
		{"GET", "/api/v1/events?limit=5", ""},
		{"GET", "/api/v1/audit", ""},
		{"GET", "/api/v1/preseeds", ""},
		{"POST", "/api/v1/machines", `{"hostname":"nN","macs":["52:54:00:00:00:0N"]}`},
	}
	// phase makes each phase's machine its own.
	do := func(method, path, body, phase string) (int, http.Header, string) {
		req, _ := http.NewRequest(method, api+path, strings.NewReader(strings.ReplaceAll(body, "N", phase)))
		req.Header.Set("Authorization", "Bearer "+token)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		c := &http.Client{Timeout: 20 * time.Second}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	for _, rq := range requests {
		if status, _, body := do(rq.method, rq.path, rq.body, "1"); status >= 300 {
			t.Fatalf("%s %s with PostgreSQL up: %d %s", rq.method, rq.path, status, body)
		}
	}

	link.down()
	start := time.Now()
	for _, rq := range requests {
		status, hdr, body := do(rq.method, rq.path, rq.body, "2")
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		jerr := json.Unmarshal([]byte(body), &e)
		if status != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || jerr != nil ||
			e.Error.Code != rackplane.EUNAVAILABLE || !strings.Contains(e.Error.Message, "database") {
			t.Errorf("%s %s with PostgreSQL down: %d Retry-After %q %s, want 503 unavailable with Retry-After", rq.method, rq.path, status, hdr.Get("Retry-After"), body)
		}
	}
	t.Logf("%d requests answered with PostgreSQL down in %s", len(requests), time.Since(start))
	if status, hdr, body := do("GET", "/readyz", "", ""); status != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || !strings.Contains(body, `"postgres": "unreachable"`) {
		t.Errorf("/readyz with PostgreSQL down: %d %s", status, body)
	}

	link.up(link.addr)
	deadline := time.Now().Add(30 * time.Second)
	for _, rq := range requests {
		for {
			status, _, body := do(rq.method, rq.path, rq.body, "3")
			if status < 300 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s %s with PostgreSQL back: %d %s", rq.method, rq.path, status, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
