package rack

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/handoff"
	"github.com/rackplane/rackplane/rack/httpboot"
	"github.com/rackplane/rackplane/rack/images"
	"github.com/rackplane/rackplane/rack/offload"
	"github.com/rackplane/rackplane/rack/tftp"
)

// versioned lets the hand-off open files of the image store. A name the
// store does not know is "not exist" to the resolver, which then tries
// its fallback root; the optional "images/" prefix lets configs keep boot
// files apart from bootloaders in the fallback root.
type versioned struct{ store *images.Store }

func (v versioned) OpenVersioned(ctx context.Context, name string) (*os.File, string, error) {
	name, err := v.storePath(name)
	if err != nil {
		return nil, "", err
	}
	f, err := v.store.OpenFile(ctx, name)
	if err != nil {
		return nil, "", notExist(name, err)
	}
	return f.File, f.VersionID, nil
}

// OpenVersionedShared is OpenVersioned with the store's descriptor, kept
// open across requests (images.Store.OpenShared).
func (v versioned) OpenVersionedShared(ctx context.Context, name string) (handoff.SharedFile, error) {
	name, err := v.storePath(name)
	if err != nil {
		return handoff.SharedFile{}, err
	}
	sf, id, err := v.store.OpenShared(ctx, name)
	if err != nil {
		return handoff.SharedFile{}, notExist(name, err)
	}
	return handoff.SharedFile{File: sf.File, VersionID: id, Size: sf.Size, ModTime: sf.ModTime, Lease: sf}, nil
}

// storePath is the store's versioned path for a requested name.
func (v versioned) storePath(name string) (string, error) {
	name = strings.TrimPrefix(name, "images/")
	if mod, ok := strings.CutPrefix(name, "grub/x86_64-efi/"); ok && strings.HasSuffix(mod, ".mod") && !strings.Contains(mod, "/") {
		// GRUB loads modules from $prefix/x86_64-efi/, which is amd64
		// GRUB's: only an amd64 grub-efi version's module will do (one of
		// another build or arch would not load, or worse).
		name = v.bootloaderFile(mod, func(bl, arch string) bool { return bl == images.GRUBEFI && arch == "amd64" })
		if name == "" {
			return "", fmt.Errorf("grub/x86_64-efi/%s: %w", mod, fs.ErrNotExist)
		}
	} else if !strings.Contains(name, "/") {
		// Firmware asks for bootloaders by bare name (DHCP's "pxelinux.0"),
		// and pxelinux then loads ldlinux.c32 and its modules from the same
		// directory: serve them from the newest usable bootloader version
		// that has such a file.
		if path := v.bootloaderFile(name, nil); path != "" {
			name = path
		}
	}
	return name, nil
}

// notExist makes the store's "no such file" (or malformed name) the
// resolver's fs.ErrNotExist, which sends it on to the fallback root.
func notExist(name string, err error) error {
	switch rackplane.ErrorCode(err) {
	case rackplane.ENOTFOUND, rackplane.EINVALID:
		return fmt.Errorf("%s: %w", name, fs.ErrNotExist)
	}
	return err
}

// bootloaderFile returns the versioned path of the file called name in the
// newest bootloader version that has one, or "", looking only at the
// bootloaders and arches that only accepts (every one when nil).
// Bootloaders are looked at in name order, so the choice is stable.
func (v versioned) bootloaderFile(name string, only func(bootloader, arch string) bool) string {
	bls := v.store.Capabilities().Bootloaders
	names := make([]string, 0, len(bls))
	for bl := range bls {
		names = append(names, bl)
	}
	sort.Strings(names)
	for _, bl := range names {
		arches := make([]string, 0, len(bls[bl]))
		for a := range bls[bl] {
			if only == nil || only(bl, a) {
				arches = append(arches, a)
			}
		}
		sort.Strings(arches)
		for _, a := range arches {
			for _, ver := range bls[bl][a] { // newest first
				for _, f := range ver.Files {
					if f.Name == name {
						return ver.ID + "/" + name
					}
				}
			}
		}
	}
	return ""
}

// openBoot builds the boot services: the decision cache, the resolver and
// the TFTP, HTTP and offload front-ends.
func (r *Rack) openBoot(js jetstream.JetStream, dataDir string) error {
	if err := r.openInstall(dataDir); err != nil {
		return err
	}
	var err error
	r.decisions, err = bootconfig.NewCache(bootconfig.CacheConfig{RackID: r.id, DataDir: dataDir,
		OnDecision: r.preseeds.Decision,
		OnCleared:  func(cl events.BootDecisionCleared) { r.preseeds.Cleared(cl.MAC, cl.MachineID) },
	}, r.nc, js, r.log.With("service", "boot-decisions"), r.registry)
	if err != nil {
		return fmt.Errorf("boot decision cache: %w", err)
	}
	// Deployments that started while the rack was stopped, or whose
	// preseed it had not fetched yet: fetch (or refresh) them now.
	for _, d := range r.decisions.Decisions() {
		r.preseeds.Decision(d)
	}
	httpURL := ""
	if r.cfg.BootFilesOverHTTP {
		httpURL = r.cfg.BootURL
	}
	renderer, err := bootconfig.NewRenderer(bootconfig.RenderConfig{HTTPBootURL: httpURL, Credential: r.creds.For,
		AgentURL: r.cfg.BootURL})
	if err != nil {
		return err
	}
	root := r.cfg.BootRoot
	if root == "" {
		root = filepath.Join(dataDir, "boot-root")
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("boot root: %w", err)
	}
	r.resolver, err = handoff.NewResolver(handoff.Config{RackID: r.id, Root: root, Telemetry: r.cfg.BootEvents, UnknownWait: r.cfg.UnknownWait}, r.decisions, versioned{r.images},
		renderer, r.publisher, r.log.With("service", "handoff"), r.registry)
	if err != nil {
		return err
	}
	if len(r.cfg.TFTPAddrs) > 0 {
		r.tftp, err = tftp.NewServer(tftp.Config{Addresses: r.cfg.TFTPAddrs, Window: uint(r.cfg.TFTPWindow)}, r.resolver,
			r.log.With("service", "tftp"), r.registry)
		if err != nil {
			return err
		}
		if err := r.tftp.Listen(); err != nil {
			return err // it says "tftp: listen <address>"
		}
	}
	r.httpboot, err = httpboot.NewServer(httpboot.Config{Addresses: []string{r.cfg.HTTPAddr}}, r.resolver,
		r.log.With("service", "httpboot"), r.registry)
	if err != nil {
		return err
	}
	r.offloadStore, err = offload.NewStore(offload.StoreConfig{Dir: filepath.Join(dataDir, "handoff")}, r.resolver,
		r.log.With("service", "offload"))
	if err != nil {
		return err
	}
	r.offload, err = offload.New(r.resolver, r.offloadStore, r.log.With("service", "offload"))
	if err != nil {
		return err
	}
	if r.cfg.OffloadSocket != "" {
		r.offloadSocket, err = offload.NewSocketServer(offload.SocketConfig{Path: r.cfg.OffloadSocket}, r.offload,
			r.log.With("service", "offload-socket"))
		if err != nil {
			return err
		}
	}
	return r.openDHCP(js, dataDir)
}

// TFTPAddrs returns where the TFTP server listens.
func (r *Rack) TFTPAddrs() []string {
	if r.tftp == nil {
		return nil
	}
	var out []string
	for _, a := range r.tftp.Addrs() {
		out = append(out, a.String())
	}
	return out
}

// syncReferences keeps the image store's references in step with the
// boot decisions: a version a machine is told to boot is never collected.
func (r *Rack) syncReferences(ctx context.Context) error {
	held := map[string]bool{}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		now := map[string]bool{}
		for mac, d := range r.decisions.Decisions() {
			owner := "boot-decision/" + mac
			now[owner] = true
			var ids []string
			if d.ImageVer != "" {
				ids = append(ids, strings.TrimPrefix(d.ImageVer, "images/"))
			}
			if d.DiskImage != "" {
				ids = append(ids, d.DiskImage)
			}
			if err := r.images.SetReferences(owner, ids...); err != nil && !errors.Is(err, context.Canceled) {
				r.log.Debug("image reference", "owner", owner, "err", err)
			}
		}
		for owner := range held {
			if !now[owner] {
				_ = r.images.SetReferences(owner)
			}
		}
		held = now
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
