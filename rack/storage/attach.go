package storage

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/rackplane/rackplane/events"
)

// Attachment is what attach made of a volume on this rack: a block device,
// access URIs, or both (events.VolumeAttachment).
type Attachment = events.VolumeAttachment

const (
	maxAttachOutput = 64 << 10
	maxURIs         = 16
	maxURI          = 2048
	maxDevicePath   = 4096
)

var uriSchemeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*$`)

// ParseAttachOutput reads attach's stdout as Ganeti defines it: the first
// line is the path of a block device, or empty when the volume is reachable
// only through URIs; every further non-empty line is an access URI. Output
// with neither is an error, as is anything that is not a clean absolute
// path or a URI with a scheme. Whether the path really is a block device is
// checked separately (CheckBlockDevice), since that needs the live system.
func ParseAttachOutput(out []byte) (Attachment, error) {
	if len(out) > maxAttachOutput {
		return Attachment{}, fmt.Errorf("attach printed %d bytes, limit %d", len(out), maxAttachOutput)
	}
	if !utf8.Valid(out) || bytes.IndexByte(out, 0) >= 0 {
		return Attachment{}, errors.New("attach output is not text")
	}
	lines := strings.Split(string(out), "\n")
	var a Attachment
	dev := strings.TrimSpace(lines[0])
	if dev != "" {
		if err := checkDevicePath(dev); err != nil {
			return Attachment{}, fmt.Errorf("first line of attach output: %w", err)
		}
		a.Device = dev
	}
	for i, l := range lines[1:] {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if len(a.URIs) == maxURIs {
			return Attachment{}, fmt.Errorf("attach printed more than %d URIs", maxURIs)
		}
		if err := checkURI(l); err != nil {
			return Attachment{}, fmt.Errorf("line %d of attach output: %w", i+2, err)
		}
		a.URIs = append(a.URIs, l)
	}
	if a.Device == "" && len(a.URIs) == 0 {
		return Attachment{}, errors.New("attach printed neither a block device nor an access URI")
	}
	return a, nil
}

func checkDevicePath(p string) error {
	switch {
	case len(p) > maxDevicePath:
		return fmt.Errorf("device path is %d bytes, limit %d", len(p), maxDevicePath)
	case strings.IndexFunc(p, isControl) >= 0 || strings.ContainsAny(p, " \t"):
		return fmt.Errorf("device path %.80q contains spaces or control characters", p)
	case !filepath.IsAbs(p):
		return fmt.Errorf("device path %.80q is not absolute", p)
	case filepath.Clean(p) != p:
		return fmt.Errorf("device path %.80q is not clean", p)
	}
	return nil
}

func checkURI(s string) error {
	if len(s) > maxURI {
		return fmt.Errorf("URI is %d bytes, limit %d", len(s), maxURI)
	}
	if strings.IndexFunc(s, isControl) >= 0 || strings.ContainsAny(s, " \t") {
		return fmt.Errorf("URI %.80q contains spaces or control characters", s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("URI %.80q: %w", s, err)
	}
	if u.Scheme == "" || !uriSchemeRE.MatchString(u.Scheme) {
		return fmt.Errorf("URI %.80q has no scheme", s)
	}
	if u.Opaque == "" && u.Host == "" && u.Path == "" {
		return fmt.Errorf("URI %.80q names nothing after its scheme", s)
	}
	return nil
}

// CheckBlockDevice reports whether path (after symlinks, as a udev
// /dev/disk/by-* link) is a block device.
func CheckBlockDevice(path string) error {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
		return fmt.Errorf("%s is not a block device", path)
	}
	return nil
}
