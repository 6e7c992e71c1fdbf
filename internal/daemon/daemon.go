package daemon

import (
	"errors"
	"flag"
)

// Part is one owner's share of a binary's settings.
type Part interface {
	RegisterFlags(fs *flag.FlagSet)
	Validate() error
}

// RegisterFlags binds every part's fields to flags of fs.
func RegisterFlags(fs *flag.FlagSet, parts ...Part) {
	for _, p := range parts {
		p.RegisterFlags(fs)
	}
}

// Validate reports every problem of every part at once.
func Validate(parts ...Part) error {
	errs := make([]error, len(parts))
	for i, p := range parts {
		errs[i] = p.Validate()
	}
	return errors.Join(errs...)
}
