package dhcp

import (
	"errors"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

func TestChooseBoot(t *testing.T) {
	const web = "http://10.0.0.1:5248"
	const mac = "52:54:00:aa:bb:cc"
	ipxeDefaults := Loaders{BIOS: LoaderIPXE, UEFI: LoaderIPXE, ARM64: LoaderIPXE}
	classic := Loaders{BIOS: LoaderPXELinux, UEFI: LoaderShim, ARM64: LoaderGRUB}
	grub := Loaders{BIOS: LoaderPXELinux, UEFI: LoaderGRUB, ARM64: LoaderGRUB}
	pxe := func(arch iana.Arch) BootRequest {
		return BootRequest{Arch: arch, HasArch: true, VendorClass: "PXEClient:Arch:00000:UNDI:002001", MAC: mac}
	}
	with := func(r BootRequest, f func(*BootRequest)) BootRequest { f(&r); return r }
	tests := []struct {
		name    string
		req     BootRequest
		loaders Loaders
		want    Boot
		err     error
	}{
		{"BIOS iPXE", pxe(iana.INTEL_X86PC), ipxeDefaults, Boot{"undionly.kpxe", ClientPXE}, nil},
		{"BIOS pxelinux", pxe(iana.INTEL_X86PC), classic, Boot{"pxelinux.0", ClientPXE}, nil},
		{"BIOS lpxelinux", pxe(iana.INTEL_X86PC), Loaders{BIOS: LoaderLPXELinux}, Boot{"lpxelinux.0", ClientPXE}, nil},
		{"iPXE ROM, BIOS loader lpxelinux", with(pxe(iana.INTEL_X86PC), func(r *BootRequest) { r.UserClass = []string{"iPXE"} }),
			Loaders{BIOS: LoaderLPXELinux}, Boot{"lpxelinux.0", ClientPXE}, nil},
		{"UEFI x64 iPXE", pxe(iana.EFI_X86_64), ipxeDefaults, Boot{"snponly.efi", ClientPXE}, nil},
		{"UEFI BC (9) iPXE", pxe(iana.EFI_BC), ipxeDefaults, Boot{"snponly.efi", ClientPXE}, nil},
		{"UEFI x64 shim", pxe(iana.EFI_X86_64), classic, Boot{"bootx64.efi", ClientPXE}, nil},
		{"UEFI x64 GRUB", pxe(iana.EFI_X86_64), grub, Boot{"grubx64.efi", ClientPXE}, nil},
		{"arm64 GRUB", pxe(iana.EFI_ARM64), classic, Boot{"grubaa64.efi", ClientPXE}, nil},
		{"arm64 iPXE", pxe(iana.EFI_ARM64), ipxeDefaults, Boot{"ipxe-arm64.efi", ClientPXE}, nil},
		{"arm64 shim", pxe(iana.EFI_ARM64), Loaders{ARM64: LoaderShim}, Boot{"bootaa64.efi", ClientPXE}, nil},
		{"HTTP boot x64", with(pxe(iana.EFI_X86_64_HTTP), func(r *BootRequest) { r.VendorClass = "HTTPClient:Arch:00016:UNDI:003000" }),
			ipxeDefaults, Boot{web + "/snponly.efi", ClientHTTP}, nil},
		{"HTTP boot x64 shim", with(pxe(iana.EFI_X86_64_HTTP), func(r *BootRequest) { r.VendorClass = "HTTPClient" }),
			classic, Boot{web + "/bootx64.efi", ClientHTTP}, nil},
		{"HTTP boot arm64", with(pxe(iana.EFI_ARM64_HTTP), func(r *BootRequest) { r.VendorClass = "HTTPClient:Arch:00019" }),
			classic, Boot{web + "/grubaa64.efi", ClientHTTP}, nil},
		{"HTTP vendor class, arch 7", with(pxe(iana.EFI_X86_64), func(r *BootRequest) { r.VendorClass = "HTTPClient" }),
			grub, Boot{web + "/grubx64.efi", ClientHTTP}, nil},
		{"iPXE user class, BIOS loader iPXE: the script", with(pxe(iana.INTEL_X86PC), func(r *BootRequest) { r.UserClass = []string{"iPXE"} }),
			ipxeDefaults, Boot{web + "/ipxe/52-54-00-aa-bb-cc.ipxe", ClientPXE}, nil},
		{"iPXE ROM, BIOS loader pxelinux: pxelinux.0", with(pxe(iana.INTEL_X86PC), func(r *BootRequest) { r.UserClass = []string{"iPXE"} }),
			classic, Boot{"pxelinux.0", ClientPXE}, nil},
		{"iPXE on UEFI, loader shim: shim", with(pxe(iana.EFI_X86_64), func(r *BootRequest) { r.IPXE = true }),
			classic, Boot{"bootx64.efi", ClientPXE}, nil},
		{"iPXE on UEFI, loader GRUB: GRUB", with(pxe(iana.EFI_X86_64), func(r *BootRequest) { r.UserClass = []string{"iPXE"} }),
			grub, Boot{"grubx64.efi", ClientPXE}, nil},
		{"iPXE on arm64, loader GRUB: GRUB", with(pxe(iana.EFI_ARM64), func(r *BootRequest) { r.IPXE = true }),
			classic, Boot{"grubaa64.efi", ClientPXE}, nil},
		{"iPXE on arm64, loader iPXE: the script", with(pxe(iana.EFI_ARM64), func(r *BootRequest) { r.IPXE = true }),
			ipxeDefaults, Boot{web + "/ipxe/52-54-00-aa-bb-cc.ipxe", ClientPXE}, nil},
		{"iPXE over HTTP boot, loader GRUB: its URL", with(pxe(iana.EFI_X86_64_HTTP), func(r *BootRequest) { r.VendorClass, r.IPXE = "HTTPClient", true }),
			grub, Boot{web + "/grubx64.efi", ClientHTTP}, nil},
		{"iPXE with no arch at all: the script", BootRequest{VendorClass: "PXEClient", UserClass: []string{"iPXE"}, MAC: mac},
			classic, Boot{web + "/ipxe/52-54-00-aa-bb-cc.ipxe", ClientPXE}, nil},
		{"iPXE, unsupported arch: the script", with(pxe(iana.EFI_IA32), func(r *BootRequest) { r.IPXE = true }),
			classic, Boot{web + "/ipxe/52-54-00-aa-bb-cc.ipxe", ClientPXE}, nil},
		{"iPXE option 175 gets the script", with(pxe(iana.EFI_X86_64), func(r *BootRequest) { r.IPXE = true }),
			ipxeDefaults, Boot{web + "/ipxe/52-54-00-aa-bb-cc.ipxe", ClientPXE}, nil},
		{"iPXE without a MAC gets the generic script", with(pxe(iana.EFI_X86_64), func(r *BootRequest) { r.IPXE, r.MAC = true, "" }),
			ipxeDefaults, Boot{web + "/ipxe/boot.ipxe", ClientPXE}, nil},
		{"iPXE over HTTP boot keeps HTTPClient", with(pxe(iana.EFI_X86_64_HTTP), func(r *BootRequest) { r.VendorClass, r.IPXE = "HTTPClient", true }),
			ipxeDefaults, Boot{web + "/ipxe/52-54-00-aa-bb-cc.ipxe", ClientHTTP}, nil},
		{"no option 93: arch from option 60", BootRequest{VendorClass: "PXEClient:Arch:00007:UNDI:003016", MAC: mac},
			grub, Boot{"grubx64.efi", ClientPXE}, nil},
		{"override file for PXE", with(pxe(iana.INTEL_X86PC), func(r *BootRequest) { r.Override = "lpxelinux.0" }),
			ipxeDefaults, Boot{"lpxelinux.0", ClientPXE}, nil},
		{"override URL for iPXE", with(pxe(iana.INTEL_X86PC), func(r *BootRequest) { r.UserClass, r.Override = []string{"iPXE"}, "http://x/custom.ipxe" }),
			ipxeDefaults, Boot{"http://x/custom.ipxe", ClientPXE}, nil},
		{"override file ignored by iPXE (no chain loop)", with(pxe(iana.INTEL_X86PC), func(r *BootRequest) { r.UserClass, r.Override = []string{"iPXE"}, "undionly.kpxe" }),
			ipxeDefaults, Boot{web + "/ipxe/52-54-00-aa-bb-cc.ipxe", ClientPXE}, nil},
		{"override iPXE image ignored by iPXE, whatever the loader", with(pxe(iana.EFI_X86_64), func(r *BootRequest) { r.IPXE, r.Override = true, "snponly.efi" }),
			classic, Boot{web + "/ipxe/52-54-00-aa-bb-cc.ipxe", ClientPXE}, nil},
		{"override file for an iPXE ROM", with(pxe(iana.INTEL_X86PC), func(r *BootRequest) { r.UserClass, r.Override = []string{"iPXE"}, "lpxelinux.0" }),
			ipxeDefaults, Boot{"lpxelinux.0", ClientPXE}, nil},
		{"override file for iPXE on UEFI", with(pxe(iana.EFI_X86_64), func(r *BootRequest) { r.IPXE, r.Override = true, "custom/grubx64.efi" }),
			ipxeDefaults, Boot{"custom/grubx64.efi", ClientPXE}, nil},
		{"override URL for HTTP boot", with(pxe(iana.EFI_X86_64_HTTP), func(r *BootRequest) { r.VendorClass, r.Override = "HTTPClient", "http://x/y.efi" }),
			ipxeDefaults, Boot{"http://x/y.efi", ClientHTTP}, nil},
		{"not a netboot client", with(pxe(iana.INTEL_X86PC), func(r *BootRequest) { r.VendorClass = "MSFT 5.0" }), ipxeDefaults, Boot{}, ErrNotNetboot},
		{"no vendor class", with(pxe(iana.INTEL_X86PC), func(r *BootRequest) { r.VendorClass = "" }), ipxeDefaults, Boot{}, ErrNotNetboot},
		// Debian's installer loads a URL in the boot file field of its
		// lease as a preseed, before the url= of its command line
		// (network-preseed): its own DHCP client must get none.
		{"the Debian installer's DHCP client", with(pxe(iana.INTEL_X86PC), func(r *BootRequest) { r.VendorClass, r.HasArch = "d-i", false }),
			ipxeDefaults, Boot{}, ErrNotNetboot},
		{"EFI IA32 unsupported", pxe(iana.EFI_IA32), ipxeDefaults, Boot{}, ErrUnsupportedArch},
		{"no arch anywhere", BootRequest{VendorClass: "PXEClient", MAC: mac}, ipxeDefaults, Boot{}, ErrUnsupportedArch},
		{"HTTP boot of IA32 unsupported", with(pxe(iana.EFI_X86_HTTP), func(r *BootRequest) { r.VendorClass = "HTTPClient" }), ipxeDefaults, Boot{}, ErrUnsupportedArch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ChooseBoot(tt.req, tt.loaders, web)
			if !errors.Is(err, tt.err) || got != tt.want {
				t.Fatalf("ChooseBoot = %+v, %v; want %+v, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestBootRequestOf(t *testing.T) {
	m, err := dhcpv4.NewDiscovery([]byte{0x52, 0x54, 0, 1, 2, 3},
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)),
		dhcpv4.WithUserClass("iPXE", false),
		dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{1, 1, 1}))
	if err != nil {
		t.Fatal(err)
	}
	got := BootRequestOf(m)
	if !got.HasArch || got.Arch != iana.EFI_X86_64 || got.VendorClass != "PXEClient:Arch:00007:UNDI:003016" ||
		len(got.UserClass) != 1 || got.UserClass[0] != "iPXE" || !got.IPXE || got.MAC != "52:54:00:01:02:03" {
		t.Fatalf("BootRequestOf = %+v", got)
	}
}
