package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

// EnvName returns the variable that overrides flag name.
func EnvName(name string) string {
	return "RACKPLANE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse parses args into fs, then fills flags not given from the
// environment (lookup is os.LookupEnv when nil). Unlike fs.Parse it does
// not stop at the first bad flag: every unknown flag, missing value and
// value a flag cannot take, on the command line and in the environment,
// is named in the error, one a line, so that one run shows all there is
// to fix. The syntax is the flag package's: -name=value, -name value
// (-name alone for a boolean), -- or the first argument that is not a
// flag ends the flags. -h or -help prints the usage and returns
// flag.ErrHelp.
func Parse(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) error {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	var errs []error
	rest := args
	for len(rest) > 0 {
		a := rest[0]
		if len(a) < 2 || a[0] != '-' {
			break
		}
		rest = rest[1:]
		if a == "--" {
			break
		}
		name := strings.TrimPrefix(a[1:], "-")
		if name == "" || name[0] == '-' || name[0] == '=' {
			errs = append(errs, fmt.Errorf("%q: not a flag (flags are -name or -name=value)", a))
			continue
		}
		name, value, hasValue := strings.Cut(name, "=")
		f := fs.Lookup(name)
		if f == nil {
			if name == "h" || name == "help" {
				if fs.Usage != nil {
					fs.Usage()
				} else {
					fmt.Fprintf(fs.Output(), "Usage of %s:\n", fs.Name())
					fs.PrintDefaults()
				}
				return flag.ErrHelp
			}
			errs = append(errs, unknown(fs, name))
			// Most likely a misspelt flag with its value: the value
			// is not taken for the first argument.
			if !hasValue && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
				rest = rest[1:]
			}
			continue
		}
		if !hasValue {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
				value = "true"
			} else if len(rest) > 0 {
				value, rest = rest[0], rest[1:]
			} else {
				errs = append(errs, fmt.Errorf("-%s: needs a value: %s", name, f.Usage))
				continue
			}
		}
		if err := set(fs, f, value); err != nil {
			errs = append(errs, fmt.Errorf("-%s %q: %s", name, value, badValue(f, err)))
		}
	}
	// The flag set keeps the arguments after the flags (fs.Args).
	if err := fs.Parse(append([]string{"--"}, rest...)); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		if v, ok := lookup(EnvName(f.Name)); ok {
			if e := set(nil, f, v); e != nil {
				errs = append(errs, fmt.Errorf("%s=%q (for -%s): %s", EnvName(f.Name), v, f.Name, badValue(f, e)))
			}
		}
	})
	return errors.Join(errs...)
}

// set sets f to value (through fs, which records it as given, when not
// nil). A value the flag refuses leaves the one before: the flag
// package's numbers and durations become 0 instead, which the
// configuration's Validate would then report as a second problem.
func set(fs *flag.FlagSet, f *flag.Flag, value string) error {
	before := f.Value.String()
	var err error
	if fs != nil {
		err = fs.Set(f.Name, value)
	} else {
		err = f.Value.Set(value)
	}
	if _, ok := f.Value.(flag.Getter); ok && err != nil {
		// Only the flag package's own values: a flag.Func's String
		// is not a value it takes back.
		_ = f.Value.Set(before)
	}
	return err
}

// unknown says that fs has no flag name, and which it may have meant.
func unknown(fs *flag.FlagSet, name string) error {
	best, dist := "", 3
	fs.VisitAll(func(f *flag.Flag) {
		if d := distance(name, f.Name); d < dist {
			best, dist = f.Name, d
		}
	})
	if best != "" {
		return fmt.Errorf("-%s: no such flag; did you mean -%s? (-h lists the flags)", name, best)
	}
	return fmt.Errorf("-%s: no such flag (-h lists the flags)", name)
}

// badValue says what kind of value f takes, when its type says it; else
// it is the flag's own error (which says it, for the flags of this
// project).
func badValue(f *flag.Flag, err error) string {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return err.Error()
	}
	switch g.Get().(type) {
	case bool:
		return "want true or false"
	case int, int64:
		return "want a whole number"
	case uint, uint64:
		return "want a whole number, 0 or more"
	case float64:
		return "want a number"
	case time.Duration:
		return "want a duration such as 30s, 5m or 1h30m"
	}
	return err.Error()
}

// distance is the edit distance of a and b (insertions, deletions,
// substitutions), for suggesting a flag.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// Usage sets fs's usage text to list each flag with its variable.
func Usage(fs *flag.FlagSet, synopsis string) {
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "%s\n\nFlags (each also settable from the environment variable shown):\n", synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(out, "  -%s (%s)\n    \t%s", f.Name, EnvName(f.Name), f.Usage)
			if f.DefValue != "" {
				fmt.Fprintf(out, " (default %q)", f.DefValue)
			}
			fmt.Fprintln(out)
		})
	}
}

// List returns the Set function of a flag holding a comma-separated list
// (for flag.FlagSet.Func): dst becomes the non-empty items, trimmed.
func List(dst *[]string) func(string) error {
	return func(v string) error {
		*dst = nil
		for _, d := range strings.Split(v, ",") {
			if d = strings.TrimSpace(d); d != "" {
				*dst = append(*dst, d)
			}
		}
		return nil
	}
}
