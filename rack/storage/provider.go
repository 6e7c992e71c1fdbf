package storage

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"

	"github.com/rackplane/rackplane/events"
)

// Action is a provider action the rack may run; the set is fixed.
type Action = events.StorageAction

// The actions of the ExtStorage interface that the rack runs.
const (
	ActionCreate  = events.StorageActionCreate
	ActionAttach  = events.StorageActionAttach
	ActionDetach  = events.StorageActionDetach
	ActionRemove  = events.StorageActionRemove
	ActionGrow    = events.StorageActionGrow
	ActionSetinfo = events.StorageActionSetinfo
	ActionVerify  = events.StorageActionVerify

	ActionSnapshot = events.StorageActionSnapshot
	ActionOpen     = events.StorageActionOpen
	ActionClose    = events.StorageActionClose
)

// RequiredActions, OptionalActions and Actions are the contract's lists
// (events.StorageRequiredActions and so on).
var (
	RequiredActions = events.StorageRequiredActions
	OptionalActions = events.StorageOptionalActions
	Actions         = events.StorageActions
)

// ParseAction maps a name to a known action; anything else is an error.
func ParseAction(name string) (Action, bool) { return events.ParseStorageAction(name) }

// script is the file an action runs. It comes from the fixed table of
// actions, never from the caller's string.
func script(a Action) string {
	if _, ok := ParseAction(string(a)); !ok {
		return ""
	}
	return string(a)
}

// optional reports whether a is one of OptionalActions.
func optional(a Action) bool { return slices.Contains(OptionalActions, a) }

// offers reports whether p has the script of a. Every valid provider has
// the required ones.
func offers(p Provider, a Action) bool {
	return !optional(a) || slices.Contains(p.Optional, string(a))
}

const parametersFile = "parameters.list"

// maxReason bounds why a provider is invalid: an OS error can quote a
// long path.
const maxReason = 1024

// Provider is one directory found in the search path, as it goes into the
// capability snapshot and the storage_providers_changed event. Invalid
// providers are listed too, with the reason, so an operator sees why a
// provider they installed is not offered.
type Provider = events.StorageProvider

// declares reports whether p declares parameter name.
func declares(p Provider, name string) bool {
	return slices.ContainsFunc(p.Parameters, func(q Parameter) bool { return q.Name == name })
}

// A provider name becomes part of events, logs and the region's API.
var providerNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ScanProviders lists the providers in the search path, in path order then
// by name. As in Ganeti, the first directory of a name wins; later ones of
// the same name are listed as invalid, shadowed by the first.
func ScanProviders(searchPath []string) ([]Provider, []error) {
	out := []Provider{}
	var errs []error
	first := map[string]string{}
	for _, dir := range searchPath {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read provider directory: %w", err))
			continue
		}
		for _, e := range entries {
			path := filepath.Join(dir, e.Name())
			st, err := os.Stat(path) // follows links: a provider may be a symlinked directory
			if err != nil || !st.IsDir() {
				continue
			}
			if prev, ok := first[e.Name()]; ok {
				out = append(out, Provider{Name: e.Name(), Path: path, Parameters: []Parameter{},
					Reason: fmt.Sprintf("shadowed by %s, earlier in the search path", prev)})
				continue
			}
			first[e.Name()] = path
			p := LoadProvider(e.Name(), path)
			p.Reason = truncate(p.Reason, maxReason)
			out = append(out, p)
		}
	}
	return out, errs
}

// LoadProvider checks the provider directory at path.
func LoadProvider(name, path string) Provider {
	p := Provider{Name: name, Path: path, Parameters: []Parameter{}}
	if !providerNameRE.MatchString(name) {
		p.Reason = fmt.Sprintf("directory name %.80q is not a valid provider name (letters, digits, '_', '.', '-'; at most 64)", name)
		return p
	}
	for _, a := range RequiredActions {
		if err := checkScript(path, script(a)); err != nil {
			p.Reason = err.Error()
			return p
		}
	}
	for _, a := range OptionalActions {
		if _, err := os.Lstat(filepath.Join(path, script(a))); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		// Present but broken makes the provider invalid: better than
		// an operator finding out at the first snapshot.
		if err := checkScript(path, script(a)); err != nil {
			p.Reason = err.Error()
			return p
		}
		p.Optional = append(p.Optional, string(a))
	}
	b, err := readRegular(filepath.Join(path, parametersFile), maxParametersFile)
	if err != nil {
		p.Reason = err.Error()
		return p
	}
	params, err := ParseParameters(b)
	if err != nil {
		p.Reason = fmt.Sprintf("%s: %v", parametersFile, err)
		return p
	}
	p.Parameters = params
	p.Valid = true
	return p
}

// checkScript requires an executable regular file. Stat follows symlinks,
// as exec will.
func checkScript(dir, name string) error {
	st, err := os.Stat(filepath.Join(dir, name))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("script %s is missing", name)
	case err != nil:
		return fmt.Errorf("script %s: %w", name, err)
	case !st.Mode().IsRegular():
		return fmt.Errorf("script %s is not a regular file", name)
	case st.Mode().Perm()&0o100 == 0:
		return fmt.Errorf("script %s is not executable", name)
	}
	return nil
}

func readRegular(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s is missing", filepath.Base(path))
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", filepath.Base(path), err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", filepath.Base(path))
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Base(path), err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is over %d bytes", filepath.Base(path), limit)
	}
	return b, nil
}
