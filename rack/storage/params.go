package storage

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/rackplane/rackplane/events"
)

// Parameter is one parameter a provider declares in its parameters.list.
type Parameter = events.StorageParameter

// Limits on parameters.list. The file comes from the rack's disk, but a
// broken or hostile provider must not make the rack hold megabytes in every
// capability snapshot.
const (
	maxParametersFile = 64 << 10
	maxParameters     = 256
	maxParamName      = 64
	maxParamDesc      = 1024
)

// A parameter becomes the environment variable EXTP_<NAME>, so its name
// must be a valid shell variable name.
var paramNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ParseParameters parses a parameters.list in Ganeti's format: one
// parameter per line, its name, then whitespace, then a free-text
// description. Ganeti splits each line on its first run of whitespace;
// blank lines and lines starting with '#' are skipped here as well, since
// neither can hold a parameter name. Names that cannot be environment
// variable names, and names that collide once upper-cased, are rejected
// with the line number.
func ParseParameters(b []byte) ([]Parameter, error) {
	if len(b) > maxParametersFile {
		return nil, fmt.Errorf("parameters.list is %d bytes, limit %d", len(b), maxParametersFile)
	}
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("parameters.list is not valid UTF-8")
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return nil, fmt.Errorf("parameters.list contains a NUL byte")
	}
	params := []Parameter{}
	seen := map[string]int{}
	for i, line := range strings.Split(string(b), "\n") {
		n := i + 1
		line = strings.TrimRight(line, "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		var name, desc string
		if j := strings.IndexAny(trimmed, " \t\v\f"); j >= 0 {
			name, desc = trimmed[:j], strings.TrimSpace(trimmed[j+1:])
		} else {
			name, desc = trimmed, ""
		}
		if len(name) > maxParamName {
			return nil, fmt.Errorf("line %d: parameter name is %d characters, limit %d", n, len(name), maxParamName)
		}
		if !paramNameRE.MatchString(name) {
			return nil, fmt.Errorf("line %d: parameter name %q is not letters, digits and underscores starting with a letter or underscore", n, name)
		}
		if strings.IndexFunc(desc, isControl) >= 0 {
			return nil, fmt.Errorf("line %d: description of %q contains control characters", n, name)
		}
		if len(desc) > maxParamDesc {
			return nil, fmt.Errorf("line %d: description of %q is %d bytes, limit %d", n, name, len(desc), maxParamDesc)
		}
		up := strings.ToUpper(name)
		if prev, ok := seen[up]; ok {
			return nil, fmt.Errorf("line %d: parameter %q repeats line %d (EXTP_%s)", n, name, prev, up)
		}
		seen[up] = n
		if len(params) == maxParameters {
			return nil, fmt.Errorf("line %d: more than %d parameters", n, maxParameters)
		}
		params = append(params, Parameter{Name: name, Description: desc})
	}
	return params, nil
}

func isControl(r rune) bool {
	return r < 0x20 && r != '\t' || r == 0x7f
}
