package dhcp

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Client types of option 60, in requests and in replies.
const (
	ClientPXE  = "PXEClient"
	ClientHTTP = "HTTPClient"
)

// Boot file names the rack's image store serves (rack/images/bootloaders.go
// imports them from the Debian packages under these names).
const (
	FileUndionly   = "undionly.kpxe" // ipxe
	FilePXELinux   = "pxelinux.0"    // pxelinux
	FileLPXELinux  = "lpxelinux.0"   // pxelinux, with HTTP
	FileSNPOnly    = "snponly.efi"   // ipxe
	FileGRUBx64    = "grubx64.efi"   // grub-efi-amd64-signed or -bin
	FileShimx64    = "bootx64.efi"   // shimx64.efi.signed, from grub-efi-amd64-signed
	FileGRUBaa64   = "grubaa64.efi"  // debian-installer-12-netboot-arm64
	FileShimaa64   = "bootaa64.efi"  // its bootnetaa64.efi, the signed shim, which loads grubaa64.efi
	FileIPXEArm64  = "ipxe-arm64.efi"
	IPXEScriptPath = "ipxe/" // the rack renders ipxe/<mac>.ipxe and ipxe/boot.ipxe
)

// Loaders is the boot loader chosen per firmware family (Config's
// BIOSLoader, UEFILoader, ARM64Loader).
type Loaders struct {
	BIOS, UEFI, ARM64 string
}

// BootRequest is what a DHCP request tells of its client's firmware.
type BootRequest struct {
	// Arch is option 93's first architecture; HasArch is false without
	// option 93 (the arch in option 60's "Arch:xxxxx" is used then).
	Arch    iana.Arch
	HasArch bool
	// VendorClass is option 60, such as PXEClient:Arch:00007:UNDI:003016.
	VendorClass string
	// UserClass is option 77 ("iPXE" from iPXE).
	UserClass []string
	// IPXE is true when the request carries option 175 (iPXE's own).
	IPXE bool
	// MAC is the client's canonical MAC ("" when chaddr is not Ethernet).
	MAC string
	// Override is the machine's own boot file from its boot decision, if
	// any: a file name for PXE clients, a URL for HTTP and iPXE clients.
	Override string
}

// Boot is where a client boots from.
type Boot struct {
	// File goes in the reply's file field: a name on the rack's TFTP
	// server, or a URL for HTTP boot and iPXE clients.
	File string
	// ClientType is option 60 of the reply: PXEClient or HTTPClient.
	ClientType string
}

// Errors of ChooseBoot: the client gets no boot information.
var (
	ErrNotNetboot      = errors.New("not a PXE or HTTP boot client (option 60)")
	ErrUnsupportedArch = errors.New("client architecture has no boot loader")
)

// NetbootClient reports whether option 60 marks a PXE or HTTP boot
// client.
func NetbootClient(vendorClass string) bool {
	return strings.HasPrefix(vendorClass, ClientPXE) || strings.HasPrefix(vendorClass, ClientHTTP)
}

// BootRequestOf reads a BootRequest from a DHCP request (Override is left
// to the caller).
func BootRequestOf(m *dhcpv4.DHCPv4) BootRequest {
	r := BootRequest{VendorClass: m.ClassIdentifier(), UserClass: m.UserClass(),
		IPXE: m.Options.Has(dhcpv4.GenericOptionCode(175))}
	if archs := m.ClientArch(); len(archs) > 0 {
		r.Arch, r.HasArch = archs[0], true
	}
	if len(m.ClientHWAddr) == 6 && m.HWType == iana.HWTypeEthernet {
		r.MAC = m.ClientHWAddr.String()
	}
	return r
}

// ChooseBoot decides the boot file of a client. httpURL is the rack's
// HTTP boot server as clients reach it (no trailing slash). It is a pure
// function of its arguments.
//
// Each firmware family boots the loader configured for it. HTTP boot
// clients (option 60 HTTPClient) get a URL of that loader and must be
// answered with option 60 HTTPClient; PXE clients get a loader file name
// on the rack's TFTP server. An iPXE client (user class iPXE or option
// 175), such as QEMU's BIOS NIC ROM or the snponly.efi the rack handed
// out, gets the rack's iPXE script when its family's loader is iPXE, and
// the configured loader otherwise (pxelinux.0 from an iPXE ROM): iPXE is
// never handed iPXE again, so there is no chain loop. A per-machine
// override wins where it fits the client: a URL for iPXE and HTTP
// clients, a file name for PXE and iPXE clients (for iPXE, unless it
// names an iPXE image).
func ChooseBoot(r BootRequest, l Loaders, httpURL string) (Boot, error) {
	if !NetbootClient(r.VendorClass) {
		return Boot{}, ErrNotNetboot
	}
	isURL := strings.HasPrefix(r.Override, "http://") || strings.HasPrefix(r.Override, "https://")
	httpBoot := strings.HasPrefix(r.VendorClass, ClientHTTP)
	arch, hasArch := r.Arch, r.HasArch
	if !hasArch {
		arch, hasArch = archOfVendorClass(r.VendorClass)
	}
	switch arch {
	case iana.EFI_X86_64_HTTP, iana.EFI_ARM64_HTTP:
		httpBoot = true
	}
	typ := ClientPXE
	if httpBoot {
		typ = ClientHTTP
	}
	if isIPXE(r) {
		script := Boot{File: httpURL + "/" + IPXEScriptPath + "boot.ipxe", ClientType: typ}
		if r.MAC != "" {
			script.File = httpURL + "/" + IPXEScriptPath + strings.ReplaceAll(r.MAC, ":", "-") + ".ipxe"
		}
		switch {
		case isURL:
			return Boot{File: r.Override, ClientType: typ}, nil
		case r.Override != "" && !isIPXEFile(r.Override):
			return Boot{File: r.Override, ClientType: ClientPXE}, nil
		case r.Override != "":
			return script, nil
		}
		if !hasArch {
			return script, nil // iPXE always sends option 93; if not, its script is the safe answer
		}
		file, err := loaderFile(arch, l)
		if err != nil || isIPXEFile(file) {
			return script, nil
		}
		if httpBoot {
			return Boot{File: httpURL + "/" + file, ClientType: ClientHTTP}, nil
		}
		return Boot{File: file, ClientType: ClientPXE}, nil
	}
	if !hasArch {
		return Boot{}, fmt.Errorf("%w: no option 93 and no Arch in option 60 %q", ErrUnsupportedArch, r.VendorClass)
	}
	if httpBoot {
		if isURL {
			return Boot{File: r.Override, ClientType: ClientHTTP}, nil
		}
		if arch == iana.INTEL_X86PC {
			return Boot{}, fmt.Errorf("%w: HTTP boot of arch %d", ErrUnsupportedArch, arch)
		}
		file, err := loaderFile(arch, l)
		if err != nil {
			return Boot{}, fmt.Errorf("%w: HTTP boot of arch %d", ErrUnsupportedArch, arch)
		}
		return Boot{File: httpURL + "/" + file, ClientType: ClientHTTP}, nil
	}
	if r.Override != "" {
		return Boot{File: r.Override, ClientType: ClientPXE}, nil
	}
	file, err := loaderFile(arch, l)
	if err != nil {
		return Boot{}, err
	}
	return Boot{File: file, ClientType: ClientPXE}, nil
}

// loaderFile is the file of the loader configured for arch's firmware
// family.
func loaderFile(arch iana.Arch, l Loaders) (string, error) {
	switch arch {
	case iana.INTEL_X86PC:
		switch l.BIOS {
		case LoaderPXELinux:
			return FilePXELinux, nil
		case LoaderLPXELinux:
			return FileLPXELinux, nil
		}
		return FileUndionly, nil
	case iana.EFI_X86_64, iana.EFI_BC, iana.EFI_X86_64_HTTP:
		return uefiFile(l.UEFI), nil
	case iana.EFI_ARM64, iana.EFI_ARM64_HTTP:
		return arm64File(l.ARM64), nil
	}
	return "", fmt.Errorf("%w: arch %d", ErrUnsupportedArch, arch)
}

// isIPXEFile reports whether a boot file name is an iPXE image (as the
// ipxe package names them), which an iPXE client must not be handed.
func isIPXEFile(name string) bool {
	base := strings.ToLower(name[strings.LastIndexByte(name, '/')+1:])
	switch base {
	case FileSNPOnly, FileIPXEArm64, "ipxe.efi", "snp.efi":
		return true
	}
	for _, ext := range []string{".kpxe", ".kkpxe", ".kkkpxe", ".pxe", ".lkrn"} {
		if strings.HasSuffix(base, ext) {
			return true
		}
	}
	return false
}

func isIPXE(r BootRequest) bool {
	if r.IPXE {
		return true
	}
	for _, u := range r.UserClass {
		if u == "iPXE" {
			return true
		}
	}
	return false
}

func uefiFile(loader string) string {
	switch loader {
	case LoaderGRUB:
		return FileGRUBx64
	case LoaderShim:
		return FileShimx64
	}
	return FileSNPOnly
}

func arm64File(loader string) string {
	switch loader {
	case LoaderIPXE:
		return FileIPXEArm64
	case LoaderShim:
		return FileShimaa64
	}
	return FileGRUBaa64
}

// archOfVendorClass reads the architecture of option 60's
// "PXEClient:Arch:00007:UNDI:003016" form (PXE 2.1, RFC 4578 section 2.1),
// for old ROMs that send no option 93.
func archOfVendorClass(vc string) (iana.Arch, bool) {
	parts := strings.Split(vc, ":")
	for i := 0; i+1 < len(parts); i++ {
		if parts[i] == "Arch" && len(parts[i+1]) == 5 {
			n, err := strconv.ParseUint(parts[i+1], 10, 16)
			if err == nil {
				return iana.Arch(n), true
			}
		}
	}
	return 0, false
}
