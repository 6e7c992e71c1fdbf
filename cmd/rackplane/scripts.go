package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rackplane/rackplane"
)

// script is what the CLI shows of a commissioning script.
type script struct {
	Name           string    `json:"name"`
	Content        string    `json:"content"`
	SHA256         string    `json:"sha256"`
	Size           int       `json:"size"`
	TimeoutSeconds int       `json:"timeout_seconds"`
	Description    string    `json:"description"`
	UpdatedAt      time.Time `json:"updated_at"`
}

const scriptsUsage = "usage: rackplane scripts list\n" +
	"       rackplane scripts add NAME FILE [-timeout D] [-description S]   (FILE - reads stdin; an existing NAME is replaced)\n" +
	"       rackplane scripts show NAME\n" +
	"       rackplane scripts rm NAME"

// parseMixed parses flags given before, between or after the positional
// arguments, which it returns (parse takes them anywhere; after "--"
// every word is an argument).
func parseMixed(fs *flag.FlagSet, args []string, stderr io.Writer) ([]string, error) {
	if err := parse(fs, args, stderr); err != nil {
		return nil, err
	}
	return fs.Args(), nil
}

// runScripts is `rackplane scripts`: operators' commissioning scripts,
// which the agent of every machine commissioned runs in name order.
func runScripts(ctx context.Context, args []string, stdout, stderr io.Writer, stdin io.Reader) error {
	if len(args) == 0 {
		return errors.New(scriptsUsage)
	}
	sub := args[0]
	fs := flag.NewFlagSet("scripts "+sub, flag.ContinueOnError)
	c := clientFlags(fs)
	timeout := fs.Duration("timeout", 0, "how long the script may run before it is killed, whole seconds up to 1h (default 5m)")
	description := fs.String("description", "", "what the script checks, one line")
	pos, err := parseMixed(fs, args[1:], stderr)
	if err != nil {
		return err
	}
	switch {
	case sub == "list" && len(pos) == 0:
		var out struct {
			Scripts []script `json:"scripts"`
		}
		if err := c.get(ctx, "/api/v1/commissioning-scripts", nil, &out); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSIZE\tTIMEOUT\tUPDATED\tDESCRIPTION")
		for _, s := range out.Scripts {
			fmt.Fprintf(tw, "%s\t%d\t%v\t%s\t%s\n", s.Name, s.Size, time.Duration(s.TimeoutSeconds)*time.Second,
				s.UpdatedAt.Local().Format(time.DateTime), dash(s.Description))
		}
		return tw.Flush()
	case sub == "add" && len(pos) == 2:
		var content []byte
		if pos[1] == "-" {
			content, err = io.ReadAll(io.LimitReader(stdin, 1<<20))
		} else {
			content, err = os.ReadFile(pos[1])
		}
		if err != nil {
			return err
		}
		if *timeout < 0 || *timeout%time.Second != 0 {
			return fmt.Errorf("-timeout %v: want whole seconds", *timeout)
		}
		body := map[string]any{"name": pos[0], "content": string(content), "description": *description,
			"timeout_seconds": int(*timeout / time.Second)}
		var s script
		err := c.send(ctx, "POST", "/api/v1/commissioning-scripts", body, &s)
		if rackplane.ErrorCode(err) == rackplane.ECONFLICT {
			delete(body, "name")
			err = c.send(ctx, "PUT", "/api/v1/commissioning-scripts/"+url.PathEscape(pos[0]), body, &s)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\t%d bytes\tsha256 %s\n", s.Name, s.Size, s.SHA256)
		return nil
	case sub == "show" && len(pos) == 1:
		var s script
		if err := c.get(ctx, "/api/v1/commissioning-scripts/"+url.PathEscape(pos[0]), nil, &s); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "# %s: timeout %v, sha256 %s", s.Name, time.Duration(s.TimeoutSeconds)*time.Second, s.SHA256)
		if s.Description != "" {
			fmt.Fprintf(stdout, "\n# %s", s.Description)
		}
		fmt.Fprintln(stdout)
		_, err := io.WriteString(stdout, s.Content)
		return err
	case sub == "rm" && len(pos) == 1:
		return c.send(ctx, "DELETE", "/api/v1/commissioning-scripts/"+url.PathEscape(pos[0]), nil, nil)
	}
	return errors.New(scriptsUsage)
}

// scriptResults is GET /api/v1/machines/{id}/commissioning.
type scriptResults struct {
	OperationID string `json:"operation_id"`
	Results     []struct {
		Name       string    `json:"name"`
		ExitCode   int       `json:"exit_code"`
		Output     string    `json:"output"`
		Truncated  bool      `json:"truncated"`
		DurationMS int64     `json:"duration_ms"`
		ReportedAt time.Time `json:"reported_at"`
	} `json:"results"`
}

// runMachineScripts is `rackplane machine scripts MACHINE`: what the
// commissioning scripts did on the machine's latest commissioning.
func runMachineScripts(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: rackplane machine scripts [-output] MACHINE   (an id or a host name)"
	fs := flag.NewFlagSet("machine scripts", flag.ContinueOnError)
	c := clientFlags(fs)
	output := fs.Bool("output", false, "print each script's output")
	pos, err := parseMixed(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New(usage)
	}
	id, err := c.machineID(ctx, pos[0])
	if err != nil {
		return err
	}
	var r scriptResults
	if err := c.get(ctx, "/api/v1/machines/"+url.PathEscape(id)+"/commissioning", nil, &r); err != nil {
		return err
	}
	if len(r.Results) == 0 {
		fmt.Fprintln(stdout, "no commissioning script has run on this machine")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCRIPT\tEXIT\tDURATION\tREPORTED\tLAST LINE")
	for _, s := range r.Results {
		exit := fmt.Sprint(s.ExitCode)
		if s.ExitCode == -1 {
			exit = "killed"
		}
		out := strings.TrimSpace(s.Output)
		last := out[strings.LastIndexByte(out, '\n')+1:]
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\n", s.Name, exit, time.Duration(s.DurationMS)*time.Millisecond,
			s.ReportedAt.Local().Format(time.DateTime), dash(last))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if *output {
		for _, s := range r.Results {
			cut := ""
			if s.Truncated {
				cut = " (its last 16 KiB)"
			}
			fmt.Fprintf(stdout, "\n----- %s: output%s -----\n%s", s.Name, cut, s.Output)
		}
	}
	return nil
}
