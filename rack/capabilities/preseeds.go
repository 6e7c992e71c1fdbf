package capabilities

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/rackplane/rackplane/events"
)

// PreseedExt is the extension of the default preseed files a rack ships.
const PreseedExt = ".preseed"

// MaxShippedPreseed bounds one shipped preseed file.
const MaxShippedPreseed = 64 << 10

var preseedNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$`)

// ReadPreseeds reads the default preseeds in dir: each <name>.preseed file
// is one, for every machine unless its first line says otherwise, as in
//
//	# rackplane-scope: os=ubuntu release=noble arch=amd64
//
// A file that is not usable is reported in the returned errors and left
// out; the others still ship.
func ReadPreseeds(dir string) ([]events.ShippedPreseed, []error) {
	if dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{fmt.Errorf("preseed dir: %w", err)}
	}
	var out []events.ShippedPreseed
	var errs []error
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), PreseedExt)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if !preseedNameRE.MatchString(name) {
			errs = append(errs, fmt.Errorf("preseed %s: name must be letters, digits, dot, dash or underscore", e.Name()))
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			errs = append(errs, fmt.Errorf("preseed %s: %w", e.Name(), err))
			continue
		}
		if len(b) > MaxShippedPreseed {
			errs = append(errs, fmt.Errorf("preseed %s: %d bytes, at most %d", e.Name(), len(b), MaxShippedPreseed))
			continue
		}
		scope, err := parseScope(string(b))
		if err != nil {
			errs = append(errs, fmt.Errorf("preseed %s: %w", e.Name(), err))
			continue
		}
		out = append(out, events.ShippedPreseed{Name: name, Scope: scope, Content: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errs
}

func parseScope(content string) (events.PreseedScope, error) {
	sc := events.PreseedScope{Kind: "global"}
	first, _, _ := strings.Cut(content, "\n")
	rest, ok := strings.CutPrefix(strings.TrimSpace(first), "# rackplane-scope:")
	if !ok {
		return sc, nil
	}
	s := bufio.NewScanner(strings.NewReader(rest))
	s.Split(bufio.ScanWords)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), "=")
		if !ok || !preseedNameRE.MatchString(v) {
			return sc, fmt.Errorf("scope %q: want key=value words (os, release, arch)", s.Text())
		}
		switch k {
		case "os":
			sc.OS = v
		case "release":
			sc.Release = v
		case "arch":
			sc.Arch = v
		default:
			return sc, fmt.Errorf("scope key %q: want os, release or arch", k)
		}
	}
	switch {
	case sc.OS != "" && sc.Release != "" && sc.Arch != "":
		sc.Kind = "os_release_arch"
	case sc.OS != "" && sc.Release != "" && sc.Arch == "":
		sc.Kind = "os_release"
	case sc.OS != "" && sc.Release == "" && sc.Arch == "":
		sc.Kind = "os"
	case sc.OS == "" && sc.Release == "" && sc.Arch == "":
	default:
		return sc, fmt.Errorf("scope %+v: release needs os, and arch needs os and release", sc)
	}
	return sc, nil
}
