package machine

import (
	"fmt"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// Filter narrows a machine list. Zero fields do not filter. The hardware
// minimums match only machines with a hardware inventory; Tags match
// machines that have every one of them.
type Filter struct {
	Status, Hostname, MAC, OS string
	// Arch is the architecture the machine's inventory reports, or its
	// own arch field while it has none (discovered machines start as
	// amd64 until commissioned).
	Arch string
	// MinCores: physical cores; MinMemory: bytes of memory (installed,
	// else the kernel's total); MinDisks: whole disks; MinDiskSize: bytes
	// of its largest disk.
	MinCores, MinDisks     int
	MinMemory, MinDiskSize int64
	Tags                   []string
	After                  string // hostname cursor
	Limit                  int
}

// Bounds of a machine list.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
	// maxBytes is the largest size a filter takes: 8 PiB, the bound of
	// an inventory's sizes.
	maxBytes = 1 << 53
)

var listParams = []string{"status", "hostname", "mac", "os", "arch", "min_cores", "min_memory", "min_disks", "min_disk_size", "tag",
	"after", "limit"}

// ParseFilter reads the query of GET /api/v1/machines. Every value that
// cannot be used is named in one invalid error, and so is a parameter no
// list knows: a misspelt filter would otherwise list every machine as if
// it matched. Each parameter but tag is given at most once.
func ParseFilter(q url.Values) (Filter, error) {
	f := Filter{Limit: DefaultListLimit}
	var bad []string
	badf := func(format string, a ...any) { bad = append(bad, fmt.Sprintf(format, a...)) }
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.Contains(listParams, k) {
			badf("%.40q: no such parameter (known: %s)", k, strings.Join(listParams, ", "))
		} else if k != "tag" && len(q[k]) > 1 {
			badf("%s: given %d times, at most once", k, len(q[k]))
		}
	}
	get := func(k string) string { return q.Get(k) }
	f.Status, f.Hostname, f.OS, f.After = get("status"), get("hostname"), get("os"), get("after")
	if f.Status != "" && !known(f.Status) {
		badf("status %.40q: want one of %s", f.Status, strings.Join(events.MachineStatuses, ", "))
	}
	if v := get("mac"); v != "" {
		mac, err := NormalizeMAC(v)
		if err != nil {
			badf("mac %.40q: want a MAC address such as 52:54:00:12:34:56", v)
		}
		f.MAC = mac
	}
	if f.Arch = get("arch"); f.Arch != "" && !nameRE.MatchString(f.Arch) {
		badf("arch %.40q: want an architecture name such as amd64", f.Arch)
	}
	count := func(k string, hi int) int {
		v := get(k)
		if v == "" {
			return 0
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > hi {
			badf("%s %.40q: want a whole number from 0 to %d", k, v, hi)
			return 0
		}
		return n
	}
	f.MinCores = count("min_cores", 1<<14)
	f.MinDisks = count("min_disks", events.MaxInventoryDisks)
	size := func(k string) int64 {
		v := get(k)
		if v == "" {
			return 0
		}
		n, err := ParseBytes(v)
		if err != nil {
			badf("%s %.40q: %v", k, v, err)
		}
		return n
	}
	f.MinMemory = size("min_memory")
	f.MinDiskSize = size("min_disk_size")
	if tags := q["tag"]; len(tags) > 0 {
		var badTags []string
		for _, t := range tags {
			if !tagRE.MatchString(t) {
				badTags = append(badTags, fmt.Sprintf("%.70q", t))
			} else if !slices.Contains(f.Tags, t) {
				f.Tags = append(f.Tags, t)
			}
		}
		if len(badTags) > 0 {
			badf("tag %s: %s", strings.Join(badTags, ", "), tagRule)
		}
		if len(tags) > events.MaxMachineTags {
			badf("tag: given %d times, at most %d (a machine has no more tags)", len(tags), events.MaxMachineTags)
		}
		slices.Sort(f.Tags)
	}
	if v := get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxListLimit {
			badf("limit %.40q: want a whole number from 1 to %d", v, MaxListLimit)
		} else {
			f.Limit = n
		}
	}
	if len(bad) > 0 {
		return Filter{}, rackplane.Errorf(rackplane.EINVALID, "machine list: %s", strings.Join(bad, "; "))
	}
	return f, nil
}

// Query is f as ParseFilter reads it: ParseFilter(f.Query()) is f.
func (f Filter) Query() url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("status", f.Status)
	set("hostname", f.Hostname)
	set("mac", f.MAC)
	set("os", f.OS)
	set("arch", f.Arch)
	num := func(k string, n int64) {
		if n != 0 {
			q.Set(k, strconv.FormatInt(n, 10))
		}
	}
	num("min_cores", int64(f.MinCores))
	num("min_memory", f.MinMemory)
	num("min_disks", int64(f.MinDisks))
	num("min_disk_size", f.MinDiskSize)
	for _, t := range f.Tags {
		q.Add("tag", t)
	}
	set("after", f.After)
	if f.Limit != DefaultListLimit {
		num("limit", int64(f.Limit))
	}
	return q
}

// byteUnits are the units ParseBytes takes, lower case. A bare K, M, G,
// T or P is binary, as dd and systemd read them; KB, MB... are decimal.
var byteUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
	"p": 1 << 50, "pib": 1 << 50, "pb": 1e15,
}

var bytesRE = regexp.MustCompile(`^([0-9]{1,20})(\.[0-9]{1,3})? ?([A-Za-z]{0,3})$`)

// ParseBytes reads a size: a number of bytes, or a number (with up to
// three decimals) and a unit such as 8GiB, 500GB, 1.5T (binary: K, M, G,
// T, P and KiB...PiB; decimal: KB...PB), up to 8 PiB. A fraction of a
// byte is rounded up: a minimum of 1.5KiB means 1536 bytes or more.
func ParseBytes(s string) (int64, error) {
	m := bytesRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("want a number of bytes, or a number and a unit such as 8GiB or 500GB")
	}
	unit, ok := byteUnits[strings.ToLower(m[3])]
	if !ok {
		return 0, fmt.Errorf("unit %q: want B, K, M, G, T, P, KiB...PiB or KB...PB", m[3])
	}
	tooLarge := fmt.Errorf("over 8 PiB")
	whole, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil || whole > maxBytes || unit > 1 && whole > maxBytes/uint64(unit) {
		return 0, tooLarge
	}
	n := int64(whole) * unit
	if frac := strings.TrimPrefix(m[2], "."); frac != "" {
		// The fraction in exact integer arithmetic: at most 999 times a
		// unit of at most 2^50 stays under 2^63.
		num, _ := strconv.ParseInt(frac, 10, 64)
		den := int64(math.Pow10(len(frac)))
		part := num * unit / den
		if num*unit%den != 0 {
			part++
		}
		n += part
	}
	if n > maxBytes {
		return 0, tooLarge
	}
	return n, nil
}

var tagRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

const tagRule = "want lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63"

// CheckTags returns tags as a machine keeps them (sorted, each once), or
// one invalid error naming every tag that is no tag name, and the count
// when there are more than events.MaxMachineTags.
func CheckTags(tags []string) ([]string, error) {
	var bad []string
	out := []string{}
	for _, t := range tags {
		if !tagRE.MatchString(t) {
			bad = append(bad, fmt.Sprintf("%.70q", t))
		} else if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	var problems []string
	if len(bad) > 0 {
		problems = append(problems, fmt.Sprintf("%s: %s", strings.Join(bad, ", "), tagRule))
	}
	if len(out) > events.MaxMachineTags {
		problems = append(problems, fmt.Sprintf("%d tags, at most %d", len(out), events.MaxMachineTags))
	}
	if len(problems) > 0 {
		return nil, invalid("tags: %s", strings.Join(problems, "; "))
	}
	slices.Sort(out)
	return out, nil
}
