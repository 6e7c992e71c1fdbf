package webui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// ContentSecurityPolicy lets the page load its own script, style and icon
// and talk to its own origin, and nothing else: no inline script or style,
// no framing, no plugins, no form posts elsewhere.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Mounter is where the UI's routes go: the API server, whose own routes
// keep /api/.
type Mounter interface {
	Mount(pattern string, h http.Handler)
}

// Handler serves the page and its assets.
type Handler struct {
	files map[string]file
}

type file struct {
	body        []byte
	contentType string
	etag        string
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// New reads the embedded files once; their ETags are content hashes, so a
// browser revalidates cheaply and a new regiond's UI is never hidden behind
// a cached old one.
func New() (*Handler, error) {
	h := &Handler{files: map[string]file{}}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			return fmt.Errorf("webui: %s: no content type for %q files", p, path.Ext(p))
		}
		sum := sha256.Sum256(body)
		h.files[strings.TrimPrefix(p, "static/")] = file{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("webui: read embedded files: %w", err)
	}
	if _, ok := h.files["index.html"]; !ok {
		return nil, fmt.Errorf("webui: no index.html embedded")
	}
	return h, nil
}

// Register adds the page at / and its assets under /ui/.
func (h *Handler) Register(m Mounter) {
	m.Mount("GET /{$}", h)
	m.Mount("GET /ui/", h)
}

// ServeHTTP serves / and /ui/ as the page and /ui/<name> as an asset.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", ContentSecurityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cache-Control", "no-cache")
	name := strings.TrimPrefix(r.URL.Path, "/ui/")
	if r.URL.Path == "/" || name == "" {
		name = "index.html"
	}
	f, ok := h.files[name]
	if !ok {
		http.Error(w, "404 page not found: the UI has no "+r.URL.Path, http.StatusNotFound)
		return
	}
	hd.Set("Content-Type", f.contentType)
	hd.Set("ETag", f.etag)
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
}
