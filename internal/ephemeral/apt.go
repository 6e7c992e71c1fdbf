package ephemeral

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// APT downloads Debian packages of one architecture with apt-get, from
// the sources the host's apt is configured with, but with package lists
// and a download cache of its own: the target architecture need not be
// one dpkg on the host knows (no "dpkg --add-architecture"), and nothing
// of the host's apt state changes.
type APT struct {
	arch string
	dir  string // holds lists/ and cache/
	// maxAge is how old the package lists may be before they are
	// fetched again.
	maxAge time.Duration
}

// newAPT returns the downloader of arch's packages whose state is kept
// in dir/apt-<arch>, with package lists fetched again when older than
// maxAge (24h when 0; a negative value always fetches them).
func newAPT(dir, arch string, maxAge time.Duration) (*APT, error) {
	if maxAge == 0 {
		maxAge = 24 * time.Hour
	}
	a := &APT{arch: arch, dir: filepath.Join(dir, "apt-"+arch), maxAge: maxAge}
	if err := os.MkdirAll(a.dir, 0o755); err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	return a, nil
}

// OpenAPT returns the downloader of arch's packages with package lists
// fetched when older than maxAge, its state in cacheDir (empty:
// rackplane/<name> in the user's cache directory), held for the caller
// alone until it calls unlock.
func OpenAPT(ctx context.Context, cacheDir, name, arch string, maxAge time.Duration, log *slog.Logger) (a *APT, unlock func(), err error) {
	if cacheDir == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return nil, nil, fmt.Errorf("cache directory: %w", err)
		}
		cacheDir = filepath.Join(d, "rackplane", name)
	}
	a, err = newAPT(cacheDir, arch, maxAge)
	if err != nil {
		return nil, nil, err
	}
	unlock, err = a.Lock(ctx)
	if err != nil {
		return nil, nil, err
	}
	log.Info("package_lists", "arch", arch, "dir", a.dir)
	if err := a.Update(ctx); err != nil {
		unlock()
		return nil, nil, err
	}
	return a, unlock, nil
}

func (a *APT) opts() []string {
	return []string{"-q",
		"-o", "APT::Architecture=" + a.arch,
		"-o", "APT::Architectures::=" + a.arch,
		"-o", "Dir::State::Lists=" + filepath.Join(a.dir, "lists"),
		"-o", "Dir::Cache=" + filepath.Join(a.dir, "cache"),
		// No packages are installed as far as this apt knows.
		"-o", "Dir::State::status=/dev/null",
	}
}

func (a *APT) run(ctx context.Context, dir, tool string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, tool, append(a.opts(), args...)...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.Error
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("%s missing: build on Debian or Ubuntu, with apt: %w", tool, err)
		}
		return nil, fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// Update fetches the package lists unless those there are fresh enough.
func (a *APT) Update(ctx context.Context) error {
	lists := filepath.Join(a.dir, "lists")
	stamp := filepath.Join(a.dir, "updated")
	if st, err := os.Stat(stamp); err == nil && time.Since(st.ModTime()) < a.maxAge {
		return nil
	}
	for _, d := range []string{filepath.Join(lists, "partial"), filepath.Join(a.dir, "cache", "archives", "partial")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("apt state: %w", err)
		}
	}
	if _, err := a.run(ctx, a.dir, "apt-get", "update"); err != nil {
		return err
	}
	return os.WriteFile(stamp, nil, 0o644)
}

// candidate returns the version apt would download of pkg.
func (a *APT) candidate(ctx context.Context, pkg string) (string, error) {
	out, err := a.run(ctx, a.dir, "apt-cache", "policy", pkg)
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "Candidate:" && f[1] != "(none)" {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("package %s:%s is unknown to apt (are its sources configured?)", pkg, a.arch)
}

// DependsOn returns the first package named prefix* that pkg depends on:
// the versioned kernel package of a metapackage such as linux-image-amd64.
func (a *APT) DependsOn(ctx context.Context, pkg, prefix string) (string, error) {
	out, err := a.run(ctx, a.dir, "apt-cache", "depends", pkg)
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], prefix) {
			return strings.TrimSuffix(f[1], ":"+a.arch), nil
		}
	}
	return "", fmt.Errorf("package %s:%s depends on no %s* package", pkg, a.arch, prefix)
}

// Download returns the path of the .deb of pkg's candidate version and
// that version, downloading it unless it is in the cache already.
func (a *APT) Download(ctx context.Context, pkg string) (path, version string, err error) {
	version, err = a.candidate(ctx, pkg)
	if err != nil {
		return "", "", err
	}
	debs := filepath.Join(a.dir, "debs")
	// apt-get download names files so, with the epoch's colon escaped.
	path = filepath.Join(debs, fmt.Sprintf("%s_%s_%s.deb", pkg, strings.ReplaceAll(version, ":", "%3a"), a.arch))
	if _, err := os.Stat(path); err == nil {
		return path, version, nil
	}
	// Download into a directory of its own, then rename: a cache entry
	// is whole or absent even when builds run side by side.
	tmp, err := os.MkdirTemp(a.dir, "download-")
	if err != nil {
		return "", "", fmt.Errorf("apt download: %w", err)
	}
	defer os.RemoveAll(tmp)
	if _, err := a.run(ctx, tmp, "apt-get", "download", pkg+":"+a.arch+"="+version); err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", "", fmt.Errorf("apt download: %w", err)
	}
	if err := os.Rename(filepath.Join(tmp, filepath.Base(path)), path); err != nil {
		return "", "", fmt.Errorf("apt download of %s: %w", pkg, err)
	}
	return path, version, nil
}

// DebFiles calls f for each regular file of the data archive of the .deb
// at path whose name (without the leading "./") want accepts, read with
// dpkg-deb.
func DebFiles(ctx context.Context, path string, want func(name string) bool, f func(name string, body []byte) error) error {
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dpkg-deb missing (Debian package dpkg): %w", err)
	}
	tr := tar.NewReader(out)
	var ferr error
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			ferr = fmt.Errorf("read %s: %w", filepath.Base(path), err)
			break
		}
		name := strings.TrimPrefix(h.Name, "./")
		if h.Typeflag != tar.TypeReg || !want(name) {
			continue
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			ferr = fmt.Errorf("read %s of %s: %w", name, filepath.Base(path), err)
			break
		}
		if err := f(name, body); err != nil {
			ferr = err
			break
		}
	}
	io.Copy(io.Discard, out) // let dpkg-deb finish
	if err := cmd.Wait(); err != nil && ferr == nil {
		ferr = fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", filepath.Base(path), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return ferr
}

// Lock holds the apt directory for this build alone until unlock is
// called: apt-get takes a lock of its own on the lists and fails, rather
// than waits, when two builds (two test packages) update at once.
func (a *APT) Lock(ctx context.Context) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(a.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("apt state lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("apt state lock: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("apt state lock: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
