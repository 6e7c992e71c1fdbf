package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/images"
	"github.com/rackplane/rackplane/region/api"
)

// runOS prints what the installation can boot and where.
func runOS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("os", flag.ContinueOnError)
	c := clientFlags(fs)
	live := fs.Bool("live", false, "ask the racks now instead of using their last reports")
	timeout := fs.Duration("timeout", 2*time.Second, "with -live: how long to wait for the racks")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	q := url.Values{}
	if *live {
		q.Set("live", "true")
		q.Set("timeout", timeout.String())
	}
	var l struct {
		OSes        []api.OSEntry   `json:"oses"`
		NotAnswered []api.RackBrief `json:"not_answered"`
	}
	if err := c.get(ctx, "/api/v1/os", q, &l); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OS\tRELEASE\tARCH\tAVAILABLE\tRACKS (VERSIONS)")
	for _, e := range l.OSes {
		var racks []string
		for _, r := range e.Racks {
			var vs []string
			for _, v := range r.Versions {
				vs = append(vs, v.Label+"/"+v.Version)
			}
			name := r.Name
			if !r.Online {
				name += " (offline)"
			}
			racks = append(racks, fmt.Sprintf("%s (%s)", name, strings.Join(vs, ", ")))
		}
		avail := "no"
		if e.Available {
			avail = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s\n", e.OS, e.Release, e.Arch, e.Subarch, avail, strings.Join(racks, "; "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range l.NotAnswered {
		fmt.Fprintf(stdout, "rack %s (%s) did not answer within %s\n", r.Name, r.ID, *timeout)
	}
	return nil
}

// runImages imports boot images into a rack.
func runImages(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: rackplane images import [-wait] RACK SOURCE  (RACK: id or name; SOURCE: a directory on the rack, or an http(s) URL of a manifest)\n" +
		"       rackplane images import RACK debian-netboot [-arch amd64|arm64]...  (Debian 12's installer from the rack's debian-installer-12-netboot-<arch> packages)\n" +
		"       rackplane images import RACK simplestreams:URL|DIR [-os ubuntu] [-release noble] [-arch amd64] [-subarch ga-24.04] [-label stable] [-versions 1]  (a MAAS-style simplestreams mirror)\n" +
		"       rackplane images build-ephemeral -arch amd64|arm64 -out DIR [-agent PATH]\n" +
		"       rackplane images build-disk -arch amd64|arm64 -out DIR"
	if len(args) > 0 && args[0] == "build-ephemeral" {
		return runBuildEphemeral(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "build-disk" {
		return runBuildDisk(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "import" {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("images import", flag.ContinueOnError)
	c := clientFlags(fs)
	wait := fs.Bool("wait", true, "wait for the import to finish, showing its progress")
	var filters events.SimplestreamsFilters
	fs.Var((*listFlag)(&filters.Arch), "arch", "debian-netboot, simplestreams: an arch to import (repeat or comma-separate; default all)")
	fs.Var((*listFlag)(&filters.OS), "os", "simplestreams: an os to import (repeat or comma-separate)")
	fs.Var((*listFlag)(&filters.Release), "release", "simplestreams: a release to import (repeat or comma-separate)")
	fs.Var((*listFlag)(&filters.Subarch), "subarch", "simplestreams: a subarch to import (repeat or comma-separate)")
	fs.Var((*listFlag)(&filters.Label), "label", "simplestreams: a label to import (repeat or comma-separate)")
	versions := fs.Int("versions", 0, fmt.Sprintf("simplestreams: how many of each product's newest versions to import (default %d)", events.DefaultSimplestreamsVersions))
	pos, err := parseMixed(fs, args[1:], stderr)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return errors.New(usage)
	}
	source, abs := absoluteSource(pos[1])
	if abs != "" {
		// The rack reads the directory from a working directory of its
		// own; this one is what the user means, on the rack beside it
		// (rackplane dev's). Said, since on another host it may not be.
		fmt.Fprintf(stderr, "rackplane: the directory %q is read on the rack: sending it as %s (relative to this directory)\n", pos[1], abs)
	}
	body, err := importSource(source, filters, *versions)
	if err != nil {
		return err
	}
	rackID, err := c.rackID(ctx, pos[0])
	if err != nil {
		return err
	}
	var st images.ImportStatus
	if err := c.send(ctx, "POST", "/api/v1/racks/"+rackID+"/images/imports", body, &st); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "import %s started on rack %s\n", st.ID, pos[0])
	for *wait && st.State == images.ImportRunning {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		if err := c.get(ctx, "/api/v1/racks/"+rackID+"/images/imports/"+url.PathEscape(st.ID), nil, &st); err != nil {
			return err
		}
		if st.State == images.ImportRunning {
			fmt.Fprintf(stdout, "  %d/%d files, %d/%d bytes\n", st.FilesDone, st.FilesTotal, st.BytesDone, st.BytesTotal)
		}
	}
	switch st.State {
	case images.ImportSucceeded:
		what := fmt.Sprintf("%d bytes", st.BytesDone)
		if st.Unchanged {
			what = "nothing: the source is unchanged"
		}
		fmt.Fprintf(stdout, "import %s succeeded: %s; versions %s\n", st.ID, what, strings.Join(st.Versions, ", "))
	case images.ImportFailed:
		return &rackplane.Error{Code: st.Code, Message: "import " + st.ID + " failed: " + st.Error}
	}
	return nil
}

// importSource is the body of an import of source, the command line's
// SOURCE: "debian-netboot", "simplestreams:" and a mirror's URL or
// directory, an http(s) manifest URL or a directory.
func importSource(source string, filters events.SimplestreamsFilters, versions int) (any, error) {
	onlySimplestreams := len(filters.OS)+len(filters.Release)+len(filters.Subarch)+len(filters.Label) > 0 || versions != 0
	switch {
	case source == "debian-netboot" || source == "debian-netboot:":
		if onlySimplestreams {
			return nil, errors.New("debian-netboot takes only -arch")
		}
		return map[string]any{"debian_netboot": events.DebianNetbootSource{Arches: filters.Arch}}, nil
	case strings.HasPrefix(source, "simplestreams:"):
		src := events.SimplestreamsSource{Filters: filters, Versions: versions}
		loc := strings.TrimPrefix(source, "simplestreams:")
		if u, err := url.Parse(loc); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
			src.URL = loc
		} else {
			src.Dir = loc
		}
		return map[string]any{"simplestreams": src}, nil
	case onlySimplestreams || len(filters.Arch) > 0:
		return nil, errors.New("-arch, -os, -release, -subarch, -label and -versions go with debian-netboot or simplestreams: sources")
	}
	if u, err := url.Parse(source); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		return map[string]string{"url": source}, nil
	}
	return map[string]string{"dir": source}, nil
}

// absoluteSource returns source with a relative directory made absolute
// against the working directory, and that directory (empty when source
// is unchanged: a URL, debian-netboot, an absolute path).
func absoluteSource(source string) (string, string) {
	prefix, loc := "", source
	if rest, ok := strings.CutPrefix(source, "simplestreams:"); ok {
		prefix, loc = "simplestreams:", rest
	}
	if loc == "" || source == "debian-netboot" || source == "debian-netboot:" || filepath.IsAbs(loc) {
		return source, ""
	}
	if u, err := url.Parse(loc); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		return source, ""
	}
	abs, err := filepath.Abs(loc)
	if err != nil {
		return source, ""
	}
	return prefix + abs, abs
}

// listFlag collects a flag given more than once, or once with commas.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, x := range strings.Split(v, ",") {
		if x = strings.TrimSpace(x); x != "" {
			*l = append(*l, x)
		}
	}
	return nil
}

// rackID resolves a rack given by id or by name: every command that
// names a rack takes either. A name that racks in service share is taken
// for the online one when exactly one of them is (an earlier rack of the
// name that went away is not the one meant); otherwise it is refused
// with their ids and states, since either could be meant.
func (c *client) rackID(ctx context.Context, rack string) (string, error) {
	return c.resolveRack(ctx, rack, true)
}

// resolveRack resolves a rack given by id or by name; preferOnline takes
// the one online rack of a name several share, where a name that is
// ambiguous is otherwise refused, listing the racks.
func (c *client) resolveRack(ctx context.Context, rack string, preferOnline bool) (string, error) {
	if _, err := uuid.Parse(rack); err == nil {
		return rack, nil
	}
	var out struct {
		Racks []rackplane.Rack `json:"racks"`
	}
	if err := c.get(ctx, "/api/v1/racks", nil, &out); err != nil {
		return "", err
	}
	var names []string
	var named, online []rackplane.Rack
	for _, r := range out.Racks {
		names = append(names, r.Name)
		if r.Name == rack {
			named = append(named, r)
			if r.Online {
				online = append(online, r)
			}
		}
	}
	switch {
	case len(named) == 0 && len(names) == 0:
		return "", fmt.Errorf("no rack named %q: the region knows no rack yet", rack)
	case len(named) == 0:
		slices.Sort(names)
		return "", fmt.Errorf("no rack named %q; the racks are %s (give a name or an id)", rack, strings.Join(slices.Compact(names), ", "))
	case len(named) == 1:
		return named[0].ID, nil
	case preferOnline && len(online) == 1:
		return online[0].ID, nil
	}
	var each []string
	for _, r := range named {
		state := "online"
		if !r.Online {
			state = "offline, last seen " + r.LastSeen.Local().Format(time.DateTime)
		}
		each = append(each, r.ID+" ("+state+")")
	}
	return "", fmt.Errorf("%d racks are named %q; give the id of the one you mean: %s", len(named), rack, strings.Join(each, "; "))
}
