package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane"
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
	const usage = "usage: rackplane images import [-wait] RACK SOURCE  (RACK: id or name; SOURCE: a directory on the rack, or an http(s) URL of a manifest)"
	if len(args) == 0 || args[0] != "import" {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("images import", flag.ContinueOnError)
	c := clientFlags(fs)
	wait := fs.Bool("wait", true, "wait for the import to finish, showing its progress")
	if err := parse(fs, args[1:], stderr); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New(usage)
	}
	rackID, err := c.rackID(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	body := map[string]string{"dir": fs.Arg(1)}
	if u, err := url.Parse(fs.Arg(1)); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		body = map[string]string{"url": fs.Arg(1)}
	}
	var st images.ImportStatus
	if err := c.send(ctx, "POST", "/api/v1/racks/"+rackID+"/images/imports", body, &st); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "import %s started on rack %s\n", st.ID, fs.Arg(0))
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

// rackID resolves a rack given by id or by name.
func (c *client) rackID(ctx context.Context, rack string) (string, error) {
	if _, err := uuid.Parse(rack); err == nil {
		return rack, nil
	}
	var out struct {
		Racks []rackplane.Rack `json:"racks"`
	}
	if err := c.get(ctx, "/api/v1/racks", nil, &out); err != nil {
		return "", err
	}
	for _, r := range out.Racks {
		if r.Name == rack {
			return r.ID, nil
		}
	}
	return "", fmt.Errorf("no rack named %q", rack)
}
