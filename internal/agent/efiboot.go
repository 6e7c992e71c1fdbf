package agent

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"

	"golang.org/x/sys/unix"
)

// EFIVars is where efivarfs is mounted, under the agent's root.
const EFIVars = "sys/firmware/efi/efivars"

// efiGlobal is the vendor GUID of the UEFI global variables (Boot####,
// BootOrder, BootNext, BootCurrent), as efivarfs spells it in names.
const efiGlobal = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

// efiVarAttrs: non-volatile, boot service and runtime access, the
// attributes the specification gives the boot variables.
const efiVarAttrs = 0x7

// fsImmutable is FS_IMMUTABLE_FL, which efivarfs sets on every variable
// it shows, so that no stray write changes the firmware's settings.
const fsImmutable = 0x10

// efivarfsMagic is efivarfs's statfs f_type.
const efivarfsMagic = 0xde5e81e4

// ErrNoESP is FindESP's answer for a table without an EFI system
// partition: the image boots from its MBR only.
var ErrNoESP = errors.New("the partition table has no EFI system partition")

// espGUID is the EFI system partition's type GUID,
// C12A7328-F81F-11D2-BA4B-00A0C93EC93B, in the byte order GPT entries
// hold it.
var espGUID = []byte{0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b}

// ESP is an EFI system partition as a boot entry's hard drive device
// path names it (UEFI 2.x, 10.3.5.1): firmware finds it on any disk by
// these fields, whatever the controller the disk hangs off.
type ESP struct {
	// Number is the partition's number in its table, from 1.
	Number uint32
	// Start and Size are in the disk's logical blocks.
	Start, Size uint64
	// GPT is true for a GPT (Signature is the partition's unique GUID),
	// false for an msdos table (Signature starts with the disk's 32-bit
	// signature).
	GPT       bool
	Signature [16]byte
}

// FindESP reads the EFI system partition of d's table (TableMSDOS or
// TableGPT), in blocks of sectorSize.
func FindESP(d Disk, sectorSize int, table string) (ESP, error) {
	if sectorSize < 512 || sectorSize&(sectorSize-1) != 0 {
		return ESP{}, fmt.Errorf("sector size %d: want a power of two of 512 or more", sectorSize)
	}
	switch table {
	case TableMSDOS:
		mbr, ents, err := readMBR(d)
		if err != nil {
			return ESP{}, err
		}
		for i, e := range ents {
			if e.typ == 0xef && e.size > 0 {
				esp := ESP{Number: uint32(i + 1), Start: uint64(e.start), Size: uint64(e.size)}
				copy(esp.Signature[:4], mbr[440:444])
				return esp, nil
			}
		}
		return ESP{}, ErrNoESP
	case TableGPT:
		ss := int64(sectorSize)
		h := make([]byte, sectorSize)
		if _, err := d.ReadAt(h, ss); err != nil {
			return ESP{}, fmt.Errorf("read the GPT header: %w", err)
		}
		if string(h[:8]) != gptSignature {
			return ESP{}, errors.New("no GPT header at LBA 1")
		}
		entLBA := int64(binary.LittleEndian.Uint64(h[gptOffEntries:]))
		num := binary.LittleEndian.Uint32(h[gptOffNumEnts:])
		entSize := binary.LittleEndian.Uint32(h[gptOffEntSize:])
		if num == 0 || num > gptMaxEntries || entSize < 128 || entSize > 4096 || int64(num)*int64(entSize) > gptMaxEntryBytes || entLBA < 2 {
			return ESP{}, fmt.Errorf("GPT entries (%d of %d bytes at LBA %d) are out of bounds", num, entSize, entLBA)
		}
		ents := make([]byte, int64(num)*int64(entSize))
		if _, err := d.ReadAt(ents, entLBA*ss); err != nil {
			return ESP{}, fmt.Errorf("read the GPT entries: %w", err)
		}
		for i := range int(num) {
			e := ents[i*int(entSize):]
			if !bytes.Equal(e[:16], espGUID) {
				continue
			}
			first, last := binary.LittleEndian.Uint64(e[gptEntOffFirst:]), binary.LittleEndian.Uint64(e[gptEntOffLast:])
			if last < first {
				return ESP{}, fmt.Errorf("GPT partition %d ends before it starts", i+1)
			}
			esp := ESP{Number: uint32(i + 1), Start: first, Size: last - first + 1, GPT: true}
			copy(esp.Signature[:], e[16:32])
			return esp, nil
		}
		return ESP{}, ErrNoESP
	}
	return ESP{}, fmt.Errorf("partition table %q: want msdos or gpt", table)
}

// RemovableLoader is the loader firmware starts from a disk that has no
// boot entry (UEFI 2.x, 3.5.1.1), for the agent's architecture: the
// path every image with an ESP has, whatever else it installs.
func RemovableLoader() string {
	if runtime.GOARCH == "arm64" {
		return `\EFI\BOOT\BOOTAA64.EFI`
	}
	return `\EFI\BOOT\BOOTX64.EFI`
}

// LoadOption is the EFI_LOAD_OPTION (UEFI 2.x, 3.1.3) of an active boot
// entry named description that starts loader from esp: a short-form
// device path (the partition, then the file), which firmware expands to
// the disk that holds the partition.
func LoadOption(description string, esp ESP, loader string) []byte {
	var path []byte
	hd := make([]byte, 42)
	hd[0], hd[1] = 0x04, 0x01 // media device path, hard drive
	binary.LittleEndian.PutUint16(hd[2:], 42)
	binary.LittleEndian.PutUint32(hd[4:], esp.Number)
	binary.LittleEndian.PutUint64(hd[8:], esp.Start)
	binary.LittleEndian.PutUint64(hd[16:], esp.Size)
	copy(hd[24:40], esp.Signature[:])
	if esp.GPT {
		hd[40], hd[41] = 0x02, 0x02 // GPT, GUID signature
	} else {
		hd[40], hd[41] = 0x01, 0x01 // PC-AT MBR, 32-bit signature
	}
	path = append(path, hd...)
	file := ucs2(loader)
	fp := make([]byte, 4, 4+len(file))
	fp[0], fp[1] = 0x04, 0x04 // media device path, file path
	binary.LittleEndian.PutUint16(fp[2:], uint16(4+len(file)))
	path = append(path, append(fp, file...)...)
	path = append(path, 0x7f, 0xff, 0x04, 0x00) // end of the device path

	out := make([]byte, 6, 6+len(description)*2+2+len(path))
	binary.LittleEndian.PutUint32(out, 1) // LOAD_OPTION_ACTIVE
	binary.LittleEndian.PutUint16(out[4:], uint16(len(path)))
	out = append(out, ucs2(description)...)
	return append(out, path...)
}

// ucs2 is s in UTF-16LE with its terminating NUL, as UEFI strings are.
func ucs2(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 0, 2*len(u)+2)
	for _, c := range u {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	return append(b, 0, 0)
}

var bootEntryName = regexp.MustCompile(`^Boot([0-9A-F]{4})-` + efiGlobal + `$`)

// SetBootNext makes the machine's next boot start the installed system
// from its disk without asking the network first, in the EFI variables
// of dir (efivarfs): it writes the boot entry opt (LoadOption) as
// Boot#### (the entry that already holds the same bytes, or the lowest
// free number), puts it in BootOrder right after the entry this boot
// came from (BootCurrent, the network boot), so that a later network
// boot the rack answers with local boot falls through to it, and sets
// BootNext to it. It returns the entry's number.
func SetBootNext(dir string, opt []byte) (uint16, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	used := map[uint16]bool{}
	num, found := uint16(0), false
	for _, de := range des {
		m := bootEntryName.FindStringSubmatch(de.Name())
		if m == nil {
			continue
		}
		n, _ := strconv.ParseUint(m[1], 16, 16)
		used[uint16(n)] = true
		if b, err := readVar(dir, de.Name()); err == nil && bytes.Equal(b, opt) && !found {
			num, found = uint16(n), true
		}
	}
	if !found {
		for used[num] {
			if num == 0xffff {
				return 0, errors.New("no free boot entry number")
			}
			num++
		}
		if err := writeVar(dir, fmt.Sprintf("Boot%04X-%s", num, efiGlobal), opt); err != nil {
			return 0, fmt.Errorf("write boot entry Boot%04X: %w", num, err)
		}
	}
	order, err := readVar(dir, "BootOrder-"+efiGlobal)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("read BootOrder: %w", err)
	}
	var entries []uint16
	for i := 0; i+1 < len(order); i += 2 {
		if n := binary.LittleEndian.Uint16(order[i:]); n != num {
			entries = append(entries, n)
		}
	}
	at := len(entries)
	if cur, err := readVar(dir, "BootCurrent-"+efiGlobal); err == nil && len(cur) == 2 {
		if i := slices.Index(entries, binary.LittleEndian.Uint16(cur)); i >= 0 {
			at = i + 1
		}
	}
	entries = slices.Insert(entries, at, num)
	order = order[:0]
	for _, n := range entries {
		order = binary.LittleEndian.AppendUint16(order, n)
	}
	if err := writeVar(dir, "BootOrder-"+efiGlobal, order); err != nil {
		return 0, fmt.Errorf("write BootOrder: %w", err)
	}
	if err := writeVar(dir, "BootNext-"+efiGlobal, binary.LittleEndian.AppendUint16(nil, num)); err != nil {
		return 0, fmt.Errorf("write BootNext: %w", err)
	}
	return num, nil
}

// readVar is a variable's data, without the attributes efivarfs puts
// before it.
func readVar(dir, name string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	if len(b) < 4 {
		return nil, fmt.Errorf("variable %s: %d bytes, shorter than its attributes", name, len(b))
	}
	return b[4:], nil
}

// writeVar sets a variable: efivarfs takes the attributes and the data
// in one write, and its files are immutable until that flag is cleared.
func writeVar(dir, name string, data []byte) error {
	p := filepath.Join(dir, name)
	flags := os.O_WRONLY | os.O_CREATE
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil || uint32(st.Type) != efivarfsMagic {
		flags |= os.O_TRUNC // a plain directory standing in for efivarfs
	}
	if f, err := os.Open(p); err == nil {
		if attr, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS); err == nil && attr&fsImmutable != 0 {
			if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(attr&^fsImmutable)); err != nil {
				f.Close()
				return fmt.Errorf("make %s writable: %w", name, err)
			}
		}
		f.Close()
	}
	f, err := os.OpenFile(p, flags, 0o644)
	if err != nil {
		return err
	}
	b := binary.LittleEndian.AppendUint32(nil, efiVarAttrs)
	if _, err := f.Write(append(b, data...)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// describeOption is a load option's description and device path, for
// logs and tests: "rackplane HD(1,MBR,0x…,2048,8192)/\EFI\BOOT\BOOTX64.EFI".
func describeOption(opt []byte) (string, error) {
	if len(opt) < 6 {
		return "", errors.New("load option shorter than its header")
	}
	pathLen := int(binary.LittleEndian.Uint16(opt[4:]))
	rest := opt[6:]
	var desc []uint16
	for {
		if len(rest) < 2 {
			return "", errors.New("description without its NUL")
		}
		c := binary.LittleEndian.Uint16(rest)
		rest = rest[2:]
		if c == 0 {
			break
		}
		desc = append(desc, c)
	}
	if len(rest) < pathLen {
		return "", errors.New("device path shorter than the header says")
	}
	path := rest[:pathLen]
	var nodes []string
	for len(path) >= 4 {
		typ, sub, n := path[0], path[1], int(binary.LittleEndian.Uint16(path[2:]))
		if n < 4 || n > len(path) {
			return "", fmt.Errorf("device path node of length %d", n)
		}
		node := path[:n]
		switch {
		case typ == 0x7f && sub == 0xff:
			return string(utf16.Decode(desc)) + " " + strings.Join(nodes, "/"), nil
		case typ == 4 && sub == 1 && n == 42:
			kind, sig := "MBR", "0x"+hex.EncodeToString([]byte{node[27], node[26], node[25], node[24]})
			if node[40] == 2 {
				kind, sig = "GPT", hex.EncodeToString(node[24:40])
			}
			nodes = append(nodes, fmt.Sprintf("HD(%d,%s,%s,%d,%d)", binary.LittleEndian.Uint32(node[4:]), kind, sig,
				binary.LittleEndian.Uint64(node[8:]), binary.LittleEndian.Uint64(node[16:])))
		case typ == 4 && sub == 4:
			var u []uint16
			for i := 4; i+1 < n; i += 2 {
				if c := binary.LittleEndian.Uint16(node[i:]); c != 0 {
					u = append(u, c)
				}
			}
			nodes = append(nodes, string(utf16.Decode(u)))
		default:
			nodes = append(nodes, fmt.Sprintf("(%d,%d)", typ, sub))
		}
		path = path[n:]
	}
	return "", errors.New("device path without its end node")
}
