package schema

import (
	"bytes"
	"fmt"
	"io/fs"
	"maps"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Set is every schema file compiled once. Safe for concurrent use.
type Set struct {
	schemas map[string]*jsonschema.Schema // by file name without .json
	// fast holds the fast validator of each schema that has one: what it
	// accepts is valid; what it refuses the library validates again.
	fast map[string]*fastSchema
}

var (
	defaultOnce sync.Once
	defaultSet  *Set
	defaultErr  error
)

// Default returns the compiled set of the embedded files. The files ship in
// the binary, so a failure here is a build defect, reported on first use.
func Default() (*Set, error) {
	defaultOnce.Do(func() { defaultSet, defaultErr = Compile(FS) })
	return defaultSet, defaultErr
}

// Compile compiles every *.json file of fsys. References between files
// resolve against BaseURI and never leave the set: nothing is fetched.
func Compile(fsys fs.FS) (*Set, error) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	c.UseLoader(noLoader{})
	names, err := fs.Glob(fsys, "*.json")
	if err != nil {
		return nil, fmt.Errorf("list schemas: %w", err)
	}
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, fmt.Errorf("read schema %s: %w", n, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("parse schema %s: %w", n, err)
		}
		if err := c.AddResource(BaseURI+n, doc); err != nil {
			return nil, fmt.Errorf("add schema %s: %w", n, err)
		}
	}
	s := &Set{schemas: make(map[string]*jsonschema.Schema, len(names)), fast: make(map[string]*fastSchema, len(names))}
	memo := map[*jsonschema.Schema]*fastSchema{}
	for _, n := range names {
		sch, err := c.Compile(BaseURI + n)
		if err != nil {
			return nil, fmt.Errorf("compile schema %s: %w", n, err)
		}
		name := strings.TrimSuffix(n, ".json")
		s.schemas[name] = sch
		// A schema the fast validator cannot take is validated by the
		// library alone; a half-compiled one is forgotten with memo.
		fmemo := maps.Clone(memo)
		if f, err := compileFast(sch, fmemo); err == nil {
			s.fast[name] = f
			memo = fmemo
		}
	}
	return s, nil
}

// Has reports whether a schema of that name (file name without .json) exists.
func (s *Set) Has(name string) bool { _, ok := s.schemas[name]; return ok }

// Names lists the schema names.
func (s *Set) Names() []string {
	out := make([]string, 0, len(s.schemas))
	for n := range s.schemas {
		out = append(out, n)
	}
	return out
}

// Validate checks a decoded JSON document (as from encoding/json into any,
// or jsonschema.UnmarshalJSON) against the named schema.
func (s *Set) Validate(name string, doc any) error {
	if f := s.fast[name]; f != nil && f.check(doc) {
		return nil
	}
	return s.validateSlow(name, doc)
}

// validateSlow validates with the library alone: the authority, and the
// source of every error's detail.
func (s *Set) validateSlow(name string, doc any) (err error) {
	sch, ok := s.schemas[name]
	if !ok {
		return fmt.Errorf("no schema %q", name)
	}
	// The library panics on some documents an outside party can send: a
	// number too large for math/big (such as 1e1000001) on a field with
	// a minimum or maximum leaves it comparing a nil value. The document
	// is refused, and the process keeps serving.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: the document cannot be validated (a number out of range?): %v", name, r)
		}
	}()
	return sch.Validate(doc)
}

// ValidateJSON decodes raw and validates it against the named schema.
func (s *Set) ValidateJSON(name string, raw []byte) error {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return s.Validate(name, doc)
}

type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema %s is not part of the contract (nothing is fetched)", url)
}
