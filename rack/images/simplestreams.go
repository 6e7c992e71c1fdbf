package images

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// The simplestreams layout (as images.maas.io and sstream-mirror publish
// it): streams/v1/index.json lists product files by path, relative to the
// mirror's root; a product file maps product names to products, each with
// its os, release, arch, subarch and label, and "versions" keyed by
// serial, each with "items" keyed by name, each item with ftype, path
// (relative to the root), sha256 and size. Fields set on an outer level
// hold for the levels inside it unless they set their own.
const (
	simplestreamsIndexPath     = "streams/v1/index.json"
	simplestreamsIndexFormat   = "index:1.0"
	simplestreamsProductFormat = "products:1.0"
	// MaxSimplestreamsJSON bounds an index or product file: images.maas.io's
	// product files are a few megabytes.
	MaxSimplestreamsJSON = 64 << 20
	// MaxSimplestreamsSelection bounds the versions one import takes:
	// images.maas.io holds hundreds of products of a few hundred megabytes
	// each, and an import without filters would fill the rack's disk.
	MaxSimplestreamsSelection = 64
)

// simplestreamsFiles are the item ftypes an image version takes, stored
// under the ftype's name, which the region's deploy code knows as kernel
// and initrd (boot-kernel, boot-initrd). Other items (squashfs.manifest,
// root-tgz, bootloader archives) are left on the mirror.
var simplestreamsFiles = []string{"boot-kernel", "boot-initrd", "squashfs"}

// simplestreamsSource imports the newest versions of a mirror's products.
type simplestreamsSource struct {
	store   *Store
	base    *url.URL // the mirror's root, ending in "/"; nil for dir
	dir     string
	filters events.SimplestreamsFilters
	keep    int
}

func (s *Store) newSimplestreamsSource(src events.SimplestreamsSource) (source, error) {
	ss := &simplestreamsSource{store: s, filters: src.Filters, keep: src.Versions}
	if ss.keep == 0 {
		ss.keep = events.DefaultSimplestreamsVersions
	}
	if ss.keep < 1 || ss.keep > events.MaxSimplestreamsVersions {
		return nil, rackplane.Errorf(rackplane.EINVALID, "simplestreams versions %d is not between 1 and %d", src.Versions, events.MaxSimplestreamsVersions)
	}
	for field, vals := range map[string][]string{"os": src.Filters.OS, "release": src.Filters.Release, "arch": src.Filters.Arch,
		"subarch": src.Filters.Subarch, "label": src.Filters.Label} {
		for _, v := range vals {
			if !validSegment(v) {
				return nil, rackplane.Errorf(rackplane.EINVALID, "simplestreams filter %s %q is not a valid %s", field, truncate(v), field)
			}
		}
	}
	switch {
	case (src.URL == "") == (src.Dir == ""):
		return nil, rackplane.Errorf(rackplane.EINVALID, "a simplestreams source needs exactly one of url and dir")
	case src.URL != "":
		u, err := url.Parse(src.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(src.URL) > 2048 {
			return nil, rackplane.Errorf(rackplane.EINVALID, "simplestreams url %q is not an http(s) URL", truncate(src.URL))
		}
		u.Fragment, u.RawQuery = "", ""
		// The mirror's root or its index, as MAAS's boot source takes
		// either.
		u.Path = strings.TrimSuffix(u.Path, simplestreamsIndexPath)
		u.Path = strings.TrimSuffix(u.Path, strings.TrimSuffix(simplestreamsIndexPath, ".json")+".sjson")
		if !strings.HasSuffix(u.Path, "/") {
			u.Path += "/"
		}
		u.RawPath = ""
		ss.base = u
	default:
		if !filepath.IsAbs(src.Dir) {
			return nil, rackplane.Errorf(rackplane.EINVALID, "simplestreams dir %q is not an absolute path", truncate(src.Dir))
		}
		ss.dir = filepath.Clean(src.Dir)
	}
	return ss, nil
}

func (ss *simplestreamsSource) key() string {
	if ss.base != nil {
		return "simplestreams:" + ss.base.Redacted()
	}
	return "simplestreams:" + ss.dir
}

// read opens p, relative to the mirror's root.
func (ss *simplestreamsSource) read(ctx context.Context, p string) (io.ReadCloser, error) {
	if ss.base == nil {
		return openInRoot(ss.dir, p, p)
	}
	resp, err := ss.store.get(ctx, ss.base.ResolveReference(&url.URL{Path: p}), nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		code := rackplane.EUNAVAILABLE
		if resp.StatusCode == http.StatusNotFound {
			code = rackplane.ENOTFOUND
		}
		return nil, rackplane.Errorf(code, "simplestreams mirror %s answered HTTP %d for %s", ss.base.Redacted(), resp.StatusCode, truncate(p))
	}
	return resp.Body, nil
}

func (ss *simplestreamsSource) readJSON(ctx context.Context, p string) ([]byte, error) {
	rc, err := ss.read(ctx, p)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	raw, err := io.ReadAll(io.LimitReader(rc, MaxSimplestreamsJSON+1))
	if err != nil {
		return nil, sourceReadError(ctx, ss.key(), err)
	}
	if len(raw) > MaxSimplestreamsJSON {
		return nil, rackplane.Errorf(rackplane.EINVALID, "simplestreams file %s is larger than %d bytes", truncate(p), MaxSimplestreamsJSON)
	}
	return raw, nil
}

func (ss *simplestreamsSource) manifest(ctx context.Context) (*Manifest, bool, error) {
	raw, err := ss.readJSON(ctx, simplestreamsIndexPath)
	if err != nil {
		return nil, false, fmt.Errorf("simplestreams mirror %s: %w", ss.key(), err)
	}
	paths, err := ParseSimplestreamsIndex(raw)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", simplestreamsIndexPath, err)
	}
	m := &Manifest{Format: ManifestFormat}
	byID := map[string]SourceVersion{}
	for _, p := range paths {
		raw, err := ss.readJSON(ctx, p)
		if err != nil {
			return nil, false, fmt.Errorf("simplestreams mirror %s: %w", ss.key(), err)
		}
		vs, err := SimplestreamsVersions(raw, ss.filters, ss.keep)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", p, err)
		}
		for _, v := range vs {
			// A product listed by two product files is one version.
			if prev, ok := byID[v.ID()]; ok {
				if !sameSourceFiles(prev.Files, v.Files) {
					return nil, false, rackplane.Errorf(rackplane.EINVALID, "%s: version %s differs from the one another product file lists", p, v.ID())
				}
				continue
			}
			byID[v.ID()] = v
			m.Versions = append(m.Versions, v)
		}
	}
	if len(m.Versions) == 0 {
		return nil, false, rackplane.Errorf(rackplane.ENOTFOUND, "simplestreams mirror %s has no bootable product (boot-kernel and boot-initrd) that matches the filters %s",
			ss.key(), describeFilters(ss.filters))
	}
	if len(m.Versions) > MaxSimplestreamsSelection {
		return nil, false, rackplane.Errorf(rackplane.EINVALID, "simplestreams mirror %s has %d versions that match the filters %s, more than %d: narrow the filters (os, release, arch, subarch, label)",
			ss.key(), len(m.Versions), describeFilters(ss.filters), MaxSimplestreamsSelection)
	}
	if err := m.check(); err != nil {
		return nil, false, err
	}
	return m, ss.store.holdsAll(m), nil
}

func (ss *simplestreamsSource) open(ctx context.Context, f SourceFile) (io.ReadCloser, error) {
	return ss.read(ctx, f.Path)
}

func (ss *simplestreamsSource) succeeded() error { return nil }

func sameSourceFiles(a, b []SourceFile) bool {
	return slices.EqualFunc(a, b, func(x, y SourceFile) bool { return x.Name == y.Name && x.SHA256 == y.SHA256 && x.Size == y.Size })
}

func describeFilters(f events.SimplestreamsFilters) string {
	var parts []string
	for _, x := range []struct {
		name string
		vals []string
	}{{"os", f.OS}, {"release", f.Release}, {"arch", f.Arch}, {"subarch", f.Subarch}, {"label", f.Label}} {
		if len(x.vals) > 0 {
			parts = append(parts, x.name+"="+strings.Join(x.vals, ","))
		}
	}
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, " ")
}

type ssIndex struct {
	Format string                  `json:"format"`
	Index  map[string]ssIndexEntry `json:"index"`
}

type ssIndexEntry struct {
	Format   string `json:"format"`
	Datatype string `json:"datatype"`
	Path     string `json:"path"`
}

// ParseSimplestreamsIndex returns the paths of the product files a
// simplestreams index lists, in the order of their content ids. A signed
// file's path (.sjson) is read as the unsigned file beside it (.json),
// which simplestreams always publishes: the rack checks each file's
// sha256 from the product file, not the product file's signature.
func ParseSimplestreamsIndex(raw []byte) ([]string, error) {
	var idx ssIndex
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, rackplane.WrapError(rackplane.EINVALID, err, "simplestreams index is not decodable: %s", truncateErr(err))
	}
	if idx.Format != simplestreamsIndexFormat {
		return nil, rackplane.Errorf(rackplane.EINVALID, "simplestreams index has format %q, want %q", truncate(idx.Format), simplestreamsIndexFormat)
	}
	ids := make([]string, 0, len(idx.Index))
	for id := range idx.Index {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var paths []string
	for _, id := range ids {
		e := idx.Index[id]
		if e.Format != simplestreamsProductFormat {
			continue // not a product list (another index, a future format)
		}
		p := e.Path
		if strings.HasSuffix(p, ".sjson") {
			p = strings.TrimSuffix(p, ".sjson") + ".json"
		}
		if !safeMirrorPath(p) {
			return nil, rackplane.Errorf(rackplane.EINVALID, "simplestreams index entry %s has path %q, which leaves the mirror", truncate(id), truncate(e.Path))
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// ssFields are the fields an image version takes from the level that
// sets them or from a level outside it.
type ssFields struct {
	OS      string `json:"os"`
	Release string `json:"release"`
	Arch    string `json:"arch"`
	Subarch string `json:"subarch"`
	Label   string `json:"label"`
}

func (f ssFields) over(outer ssFields) ssFields {
	pick := func(inner, outer string) string {
		if inner != "" {
			return inner
		}
		return outer
	}
	return ssFields{OS: pick(f.OS, outer.OS), Release: pick(f.Release, outer.Release), Arch: pick(f.Arch, outer.Arch),
		Subarch: pick(f.Subarch, outer.Subarch), Label: pick(f.Label, outer.Label)}
}

type ssProducts struct {
	ssFields
	Format   string               `json:"format"`
	Products map[string]ssProduct `json:"products"`
}

type ssProduct struct {
	ssFields
	Versions map[string]ssVersion `json:"versions"`
}

type ssVersion struct {
	ssFields
	Items map[string]ssItem `json:"items"`
}

type ssItem struct {
	FType  string `json:"ftype"`
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// SimplestreamsVersions returns the image versions of a simplestreams
// product file: for each product that filters match and that has the
// five fields of an image, its keep newest versions (by serial) with a
// boot-kernel and a boot-initrd, as source versions of installer family
// custom. Products that are not bootable images (bootloader archives,
// CentOS root tarballs) are passed over. Whatever it returns passes the
// manifest's checks.
func SimplestreamsVersions(raw []byte, filters events.SimplestreamsFilters, keep int) ([]SourceVersion, error) {
	var pf ssProducts
	if err := json.Unmarshal(raw, &pf); err != nil {
		return nil, rackplane.WrapError(rackplane.EINVALID, err, "simplestreams product file is not decodable: %s", truncateErr(err))
	}
	if pf.Format != simplestreamsProductFormat {
		return nil, rackplane.Errorf(rackplane.EINVALID, "simplestreams product file has format %q, want %q", truncate(pf.Format), simplestreamsProductFormat)
	}
	names := make([]string, 0, len(pf.Products))
	for n := range pf.Products {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []SourceVersion
	for _, name := range names {
		prod := pf.Products[name]
		serials := make([]string, 0, len(prod.Versions))
		for s := range prod.Versions {
			serials = append(serials, s)
		}
		// Serials are dates (20250805, 20240128_01): the newest sorts last.
		sort.Sort(sort.Reverse(sort.StringSlice(serials)))
		taken := 0
		for _, serial := range serials {
			if taken == keep {
				break
			}
			ver := prod.Versions[serial]
			f := ver.ssFields.over(prod.ssFields.over(pf.ssFields))
			if f.OS == "" || f.Release == "" || f.Arch == "" || f.Subarch == "" || f.Label == "" || !matchFilters(filters, f) {
				continue
			}
			v, ok, err := simplestreamsVersion(name, serial, f, ver.Items)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, v)
				taken++
			}
		}
	}
	return out, nil
}

func simplestreamsVersion(product, serial string, f ssFields, items map[string]ssItem) (SourceVersion, bool, error) {
	v := SourceVersion{Kind: KindImage, OS: f.OS, Release: f.Release, Arch: f.Arch, Subarch: f.Subarch, Label: f.Label,
		Version: serial, Installer: events.InstallerCustom}
	keys := make([]string, 0, len(items))
	for k := range items {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		it := items[k]
		if !slices.Contains(simplestreamsFiles, it.FType) {
			continue
		}
		if slices.ContainsFunc(v.Files, func(sf SourceFile) bool { return sf.Name == it.FType }) {
			return v, false, rackplane.Errorf(rackplane.EINVALID, "product %s version %s has two %s items", truncate(product), truncate(serial), it.FType)
		}
		if len(it.SHA256) != 64 || !isHex(it.SHA256) || it.Size < 0 || !safeMirrorPath(it.Path) {
			return v, false, rackplane.Errorf(rackplane.EINVALID, "product %s version %s: item %s needs a path inside the mirror, a lower-case sha256 and a size",
				truncate(product), truncate(serial), truncate(k))
		}
		v.Files = append(v.Files, SourceFile{Name: it.FType, SHA256: it.SHA256, Size: it.Size, Path: it.Path})
	}
	has := func(n string) bool {
		return slices.ContainsFunc(v.Files, func(sf SourceFile) bool { return sf.Name == n })
	}
	if !has("boot-kernel") || !has("boot-initrd") {
		return v, false, nil
	}
	if err := (&Manifest{Format: ManifestFormat, Versions: []SourceVersion{v}}).check(); err != nil {
		return v, false, fmt.Errorf("product %s version %s: %w", truncate(product), truncate(serial), err)
	}
	return v, true, nil
}

// matchFilters reports whether fields f pass every filter given.
func matchFilters(fl events.SimplestreamsFilters, f ssFields) bool {
	in := func(vals []string, v string) bool { return len(vals) == 0 || slices.Contains(vals, v) }
	return in(fl.OS, f.OS) && in(fl.Release, f.Release) && in(fl.Arch, f.Arch) && in(fl.Subarch, f.Subarch) && in(fl.Label, f.Label)
}

// safeMirrorPath accepts a relative path that stays inside the mirror.
func safeMirrorPath(p string) bool {
	if p == "" || len(p) > 1024 {
		return false
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.ContainsAny(seg, "\\\x00") {
			return false
		}
	}
	return true
}
