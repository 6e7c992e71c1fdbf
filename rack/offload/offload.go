package offload

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/handoff"
)

// Offload answers hand-off requests of out-of-process front-ends.
type Offload struct {
	resolver *handoff.Resolver
	store    *Store
	log      *slog.Logger

	// reports follows the transfer reports of the handoff rpc's
	// front-ends (Completions); ready is closed once it is set.
	reports   *reports
	ready     chan struct{}
	readyOnce sync.Once
}

// New returns an Offload over resolver, writing dynamic content to store.
func New(resolver *handoff.Resolver, store *Store, log *slog.Logger) (*Offload, error) {
	if resolver == nil || store == nil || log == nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "offload: resolver, store and logger are required")
	}
	return &Offload{resolver: resolver, store: store, log: log, ready: make(chan struct{})}, nil
}

// Answer is what a front-end is told to serve.
type Answer struct {
	HandoffID string `json:"handoff_id"`
	Route     string `json:"route"`
	// Path is the absolute path of the file to serve.
	Path string `json:"path"`
	// Ephemeral files are deleted by the rack once the transfer is
	// reported, or after their time to live.
	Ephemeral bool   `json:"ephemeral"`
	Size      int64  `json:"size"`
	VersionID string `json:"version_id,omitempty"`
	MachineID string `json:"machine_id,omitempty"`
}

// Handoff resolves a request and turns the result into a path.
func (o *Offload) Handoff(ctx context.Context, req handoff.Request) (Answer, error) {
	res, err := o.resolver.Resolve(ctx, req)
	if err != nil {
		return Answer{}, err
	}
	defer o.resolver.Release(res)
	a := Answer{HandoffID: res.ID, Route: res.Route, Size: res.Size, VersionID: res.VersionID, MachineID: res.MachineID}
	if res.File != nil {
		a.Path, err = openedPath(res.File)
	} else {
		a.Path, err = o.store.put(res.ID, res.Content, res.Summarized, req.Protocol == events.BootProtocolOffloadRPC)
		a.Ephemeral = true
	}
	if err != nil {
		return Answer{}, rackplane.WrapError(rackplane.EINTERNAL, err, "hand-off failed")
	}
	return a, nil
}

// openedPath names the file f really is: the front-end opens it by name,
// so it gets the path with every symlink resolved, of the very file the
// resolver checked, not the name it was asked for.
func openedPath(f *os.File) (string, error) {
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err == nil && filepath.IsAbs(p) {
		return p, nil
	}
	if filepath.IsAbs(f.Name()) {
		return f.Name(), nil
	}
	return "", fmt.Errorf("cannot name opened file %s: %v", f.Name(), err)
}
