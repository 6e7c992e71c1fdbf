package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/rackplane/rackplane"
)

// httpSource imports from a manifest URL, remembering the manifest's
// validators so an unchanged source costs one 304.
type httpSource struct {
	store   *Store
	url     *url.URL
	pending *sourceCache
}

type sourceCache struct {
	Source       string          `json:"source"`
	ETag         string          `json:"etag,omitempty"`
	LastModified string          `json:"last_modified,omitempty"`
	Manifest     json.RawMessage `json:"manifest"`
}

func (h *httpSource) key() string { return h.url.Redacted() }

func (h *httpSource) cachePath() string {
	sum := sha256.Sum256([]byte(h.url.String()))
	return filepath.Join(h.store.sourceDir, hex.EncodeToString(sum[:])+".json")
}

func (h *httpSource) loadCache() *sourceCache {
	b, err := os.ReadFile(h.cachePath())
	if err != nil {
		return nil
	}
	var c sourceCache
	if err := json.Unmarshal(b, &c); err != nil || len(c.Manifest) == 0 {
		h.store.log.Warn("ignoring unreadable source cache", "source", h.key(), "err", err)
		return nil
	}
	return &c
}

func (h *httpSource) manifest(ctx context.Context) (*Manifest, bool, error) {
	cache := h.loadCache()
	resp, err := h.store.get(ctx, h.url, func(r *http.Request) {
		if cache == nil {
			return
		}
		if cache.ETag != "" {
			r.Header.Set("If-None-Match", cache.ETag)
		}
		if cache.LastModified != "" {
			r.Header.Set("If-Modified-Since", cache.LastModified)
		}
	})
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && cache != nil:
		m, err := ParseManifest(h.store.set, cache.Manifest)
		if err != nil {
			return nil, false, fmt.Errorf("remembered manifest: %w", err)
		}
		return m, true, nil
	case resp.StatusCode == http.StatusNotFound:
		return nil, false, rackplane.Errorf(rackplane.ENOTFOUND, "source %s has no manifest (HTTP 404)", h.key())
	case resp.StatusCode != http.StatusOK:
		return nil, false, rackplane.Errorf(rackplane.EUNAVAILABLE, "source %s answered HTTP %d", h.key(), resp.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		return nil, false, sourceReadError(ctx, h.key(), err)
	}
	m, err := ParseManifest(h.store.set, raw)
	if err != nil {
		return nil, false, fmt.Errorf("source %s: %w", h.key(), err)
	}
	h.pending = &sourceCache{Source: h.key(), ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified"), Manifest: raw}
	return m, false, nil
}

func (h *httpSource) open(ctx context.Context, f SourceFile) (io.ReadCloser, error) {
	p := f.Path
	if p == "" {
		p = f.Name
	}
	u := h.url.ResolveReference(&url.URL{Path: p})
	resp, err := h.store.get(ctx, u, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		code := rackplane.EUNAVAILABLE
		if resp.StatusCode == http.StatusNotFound {
			code = rackplane.ENOTFOUND
		}
		return nil, rackplane.Errorf(code, "source %s answered HTTP %d for file %s", h.key(), resp.StatusCode, f.Name)
	}
	return resp.Body, nil
}

func (h *httpSource) succeeded() error {
	if h.pending == nil || (h.pending.ETag == "" && h.pending.LastModified == "") {
		return nil // nothing to make a conditional request with
	}
	b, err := json.Marshal(h.pending)
	if err != nil {
		return err
	}
	if err := h.store.writeFileAtomic(h.cachePath(), b); err != nil {
		return fmt.Errorf("remember source validators: %w", err)
	}
	return nil
}

var errStalled = errors.New("source stalled")

// get sends a GET whose context is cancelled when the source sends nothing
// for StallTimeout, before the headers or between two reads of the body:
// a hanging source must not hold an import (and its source's slot) forever,
// while a slow but moving one may take as long as it needs.
func (s *Store) get(ctx context.Context, u *url.URL, prepare func(*http.Request)) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	d := s.cfg.StallTimeout
	timer := time.AfterFunc(d, func() { cancel(errStalled) })
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		timer.Stop()
		cancel(nil)
		return nil, rackplane.WrapError(rackplane.EINVALID, err, "bad source url %s", u.Redacted())
	}
	if prepare != nil {
		prepare(req)
	}
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		timer.Stop()
		defer cancel(nil)
		return nil, sourceReadError(ctx, u.Redacted(), err)
	}
	resp.Body = &stallBody{body: resp.Body, timer: timer, d: d, ctx: ctx, cancel: cancel, src: u.Redacted()}
	return resp, nil
}

func sourceReadError(ctx context.Context, src string, err error) error {
	var coded *rackplane.Error
	switch {
	case errors.As(err, &coded):
		return err // classified where it happened (a stalled body)
	case errors.Is(context.Cause(ctx), errStalled):
		return rackplane.WrapError(rackplane.ETIMEOUT, err, "source %s stopped sending (stall timeout)", src)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return rackplane.WrapError(rackplane.ETIMEOUT, err, "reading from source %s took too long", src)
	case ctx.Err() != nil:
		return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "import from %s was cancelled (store closing)", src)
	default:
		return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "cannot read from source %s", src)
	}
}

type stallBody struct {
	body   io.ReadCloser
	timer  *time.Timer
	d      time.Duration
	ctx    context.Context
	cancel context.CancelCauseFunc
	src    string
}

func (b *stallBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if n > 0 {
		b.timer.Reset(b.d)
	}
	if err != nil && err != io.EOF {
		err = sourceReadError(b.ctx, b.src, err)
	}
	return n, err
}

func (b *stallBody) Close() error {
	b.timer.Stop()
	b.cancel(nil)
	return b.body.Close()
}

// dirSource imports from a local directory holding manifest.json. Files
// are opened through an os.Root, so a manifest cannot point outside it,
// symlinks included.
type dirSource struct {
	store *Store
	dir   string
}

func (d *dirSource) key() string { return d.dir }

func (d *dirSource) manifest(ctx context.Context) (*Manifest, bool, error) {
	root, err := os.OpenRoot(d.dir)
	if err != nil {
		return nil, false, rackplane.WrapError(rackplane.ENOTFOUND, err, "source directory %s cannot be opened", d.dir)
	}
	defer root.Close()
	f, err := root.Open("manifest.json")
	if err != nil {
		return nil, false, rackplane.WrapError(rackplane.ENOTFOUND, err, "source directory %s has no readable manifest.json", d.dir)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, MaxManifestSize+1))
	if err != nil {
		return nil, false, rackplane.WrapError(rackplane.EUNAVAILABLE, err, "read %s/manifest.json", d.dir)
	}
	m, err := ParseManifest(d.store.set, raw)
	if err != nil {
		return nil, false, fmt.Errorf("source %s: %w", d.dir, err)
	}
	return m, false, nil
}

func (d *dirSource) open(ctx context.Context, f SourceFile) (io.ReadCloser, error) {
	p := f.Path
	if p == "" {
		p = f.Name
	}
	return openInRoot(d.dir, p, f.Name)
}

func openInRoot(dir, p, name string) (io.ReadCloser, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, rackplane.WrapError(rackplane.ENOTFOUND, err, "source directory %s cannot be opened", dir)
	}
	defer root.Close()
	fh, err := root.Open(p)
	if err != nil {
		return nil, rackplane.WrapError(rackplane.ENOTFOUND, err, "file %s is not readable in %s", name, dir)
	}
	return fh, nil
}

func (d *dirSource) succeeded() error { return nil }
