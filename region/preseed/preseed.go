package preseed

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"text/template"

	"github.com/rackplane/rackplane"
)

// Vars are the variables a template sees.
type Vars struct {
	Machine struct {
		ID, Hostname, Arch, MAC string
		MACs                    []string
	}
	OS struct {
		Name, Release, Arch, Subarch, ImageVersion string
	}
	Rack struct {
		ID, Name, BootURL string
	}
	URLs struct {
		Preseed, Boot, Status string
	}
	Preseed struct {
		Name    string
		Version int64
	}
	LicenceKey string
}

// MaxSize bounds a template.
const MaxSize = 1 << 20

var funcs = template.FuncMap{
	"join":  strings.Join,
	"upper": strings.ToUpper,
	"lower": strings.ToLower,
	"quote": strconv.Quote,
}

func parse(name, src string) (*template.Template, error) {
	if len(src) > MaxSize {
		return nil, rackplane.Errorf(rackplane.EINVALID, "preseed %s is %d bytes; at most %d", name, len(src), MaxSize)
	}
	t, err := template.New(name).Funcs(funcs).Option("missingkey=error").Parse(src)
	if err != nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "preseed %s does not parse: %v", name, err)
	}
	return t, nil
}

// Render renders src with v.
func Render(name, src string, v Vars) (string, error) {
	t, err := parse(name, src)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, v); err != nil {
		return "", rackplane.Errorf(rackplane.EINVALID, "preseed %s does not render: %v", name, err)
	}
	return b.String(), nil
}

// Check renders src with sample values, so a template that refers to
// something that does not exist is refused when it is saved, not when a
// machine is installing.
func Check(name, src string) error {
	var v Vars
	v.Machine.ID, v.Machine.Hostname, v.Machine.Arch = "00000000-0000-0000-0000-000000000000", "sample", "amd64"
	v.Machine.MAC, v.Machine.MACs = "52:54:00:00:00:01", []string{"52:54:00:00:00:01"}
	v.OS.Name, v.OS.Release, v.OS.Arch, v.OS.Subarch, v.OS.ImageVersion = "ubuntu", "noble", "amd64", "generic", "ubuntu/amd64/generic/noble/stable/1"
	v.Rack.ID, v.Rack.Name, v.Rack.BootURL = "00000000-0000-0000-0000-000000000000", "rack", "http://rack:5248"
	v.URLs.Preseed, v.URLs.Boot = "http://rack:5248/preseed/sample", "http://rack:5248"
	v.URLs.Status = "http://rack:5248/status/sample/token"
	v.Preseed.Name, v.Preseed.Version = name, 1
	_, err := Render(name, src, v)
	return err
}

// Diff returns a unified diff of a (from) and b (to), by lines.
func Diff(aName, bName, a, b string) string {
	al, bl := lines(a), lines(b)
	// Longest common subsequence table; preseeds are small documents.
	n, m := len(al), len(bl)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if al[i] == bl[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\n+++ %s\n", aName, bName)
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && al[i] == bl[j]:
			out.WriteString(" " + al[i] + "\n")
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] > lcs[i+1][j]):
			out.WriteString("+" + bl[j] + "\n")
			j++
		default:
			out.WriteString("-" + al[i] + "\n")
			i++
		}
	}
	return out.String()
}

func lines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
