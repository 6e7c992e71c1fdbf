package agent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Partition tables a disk image may have (events.DiskImage.Table).
const (
	TableMSDOS = "msdos"
	TableGPT   = "gpt"
)

// Disk is what GrowPartition edits: a block device or a file standing in
// for one.
type Disk interface {
	io.ReaderAt
	io.WriterAt
}

// GrowPartition grows partition part (1-based) of the table of the disk
// of size bytes, in sectors of sectorSize, to the end of the disk: an
// msdos table's entry (a primary partition's), or a GPT's entry, both
// headers (last usable LBA, the backup's place, the CRCs) and the backup
// header and entries moved to the disk's end, and the protective MBR.
// Only the partition that ends last can grow: growing another would
// overlap the next. It returns the partition's new size in bytes; a
// partition that reaches the end already is left as it is.
func GrowPartition(d Disk, size int64, sectorSize int, table string, part int) (int64, error) {
	if sectorSize < 512 || sectorSize&(sectorSize-1) != 0 {
		return 0, fmt.Errorf("sector size %d: want a power of two of 512 or more", sectorSize)
	}
	sectors := size / int64(sectorSize)
	switch table {
	case TableMSDOS:
		return growMSDOS(d, sectors, sectorSize, part)
	case TableGPT:
		return growGPT(d, sectors, sectorSize, part)
	}
	return 0, fmt.Errorf("partition table %q: want msdos or gpt", table)
}

// mbrEntry is an msdos partition entry's start and size, in sectors.
type mbrEntry struct {
	typ         byte
	start, size uint32
}

func readMBR(d Disk) ([]byte, []mbrEntry, error) {
	mbr := make([]byte, 512)
	if _, err := d.ReadAt(mbr, 0); err != nil {
		return nil, nil, fmt.Errorf("read the MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		return nil, nil, errors.New("no MBR: sector 0 lacks the 55AA signature")
	}
	var out []mbrEntry
	for i := range 4 {
		e := mbr[446+16*i:]
		out = append(out, mbrEntry{typ: e[4], start: binary.LittleEndian.Uint32(e[8:]), size: binary.LittleEndian.Uint32(e[12:])})
	}
	return mbr, out, nil
}

func growMSDOS(d Disk, sectors int64, sectorSize, part int) (int64, error) {
	if part < 1 || part > 4 {
		return 0, fmt.Errorf("msdos partition %d: only a primary partition (1 to 4) can grow", part)
	}
	mbr, ents, err := readMBR(d)
	if err != nil {
		return 0, err
	}
	e := ents[part-1]
	switch {
	case e.typ == 0 || e.size == 0:
		return 0, fmt.Errorf("msdos partition %d is empty", part)
	case e.typ == 0x05 || e.typ == 0x0f || e.typ == 0x85:
		return 0, fmt.Errorf("msdos partition %d is an extended partition", part)
	case e.typ == 0xee:
		return 0, errors.New("the MBR is GPT's protective one: the table is gpt")
	}
	for i, o := range ents {
		if i != part-1 && o.typ != 0 && o.size != 0 && o.start > e.start {
			return 0, fmt.Errorf("msdos partition %d is not the last: partition %d follows it", part, i+1)
		}
	}
	end := min(sectors, 1<<32-1)
	if int64(e.start) >= end {
		return 0, fmt.Errorf("msdos partition %d starts past the end of the disk", part)
	}
	newSize := uint32(end - int64(e.start))
	if newSize <= e.size {
		return int64(e.size) * int64(sectorSize), nil
	}
	binary.LittleEndian.PutUint32(mbr[446+16*(part-1)+12:], newSize)
	if _, err := d.WriteAt(mbr, 0); err != nil {
		return 0, fmt.Errorf("write the MBR: %w", err)
	}
	return int64(newSize) * int64(sectorSize), nil
}

// GPT header fields (UEFI 2.x, 5.3.2), by offset.
const (
	gptSignature  = "EFI PART"
	gptHeaderSize = 92
	gptOffHdrSize = 12
	gptOffHdrCRC  = 16
	gptOffCurrent = 24
	gptOffBackup  = 32
	gptOffFirst   = 40
	gptOffLast    = 48
	gptOffEntries = 72
	gptOffNumEnts = 80
	gptOffEntSize = 84
	gptOffEntsCRC = 88
	gptMaxEntries = 1 << 16
	// gptMaxEntryBytes bounds the entries read into memory: tables hold
	// 16 KiB (128 of 128 bytes); a header that asks for more is junk.
	gptMaxEntryBytes = 4 << 20
	gptEntOffFirst   = 32
	gptEntOffLast    = 40
)

// gptHeaderCRC is the CRC32 of the header's hdrSize bytes with its CRC
// field zero.
func gptHeaderCRC(h []byte, hdrSize uint32) uint32 {
	c := bytes.Clone(h[:hdrSize])
	binary.LittleEndian.PutUint32(c[gptOffHdrCRC:], 0)
	return crc32.ChecksumIEEE(c)
}

func growGPT(d Disk, sectors int64, sectorSize, part int) (int64, error) {
	ss := int64(sectorSize)
	h := make([]byte, sectorSize)
	if _, err := d.ReadAt(h, ss); err != nil {
		return 0, fmt.Errorf("read the GPT header: %w", err)
	}
	if string(h[:8]) != gptSignature {
		return 0, errors.New("no GPT header at LBA 1")
	}
	hdrSize := binary.LittleEndian.Uint32(h[gptOffHdrSize:])
	if hdrSize < gptHeaderSize || int(hdrSize) > sectorSize {
		return 0, fmt.Errorf("GPT header size %d is out of bounds", hdrSize)
	}
	if gptHeaderCRC(h, hdrSize) != binary.LittleEndian.Uint32(h[gptOffHdrCRC:]) {
		return 0, errors.New("the GPT header's CRC is wrong")
	}
	entLBA := int64(binary.LittleEndian.Uint64(h[gptOffEntries:]))
	num := binary.LittleEndian.Uint32(h[gptOffNumEnts:])
	entSize := binary.LittleEndian.Uint32(h[gptOffEntSize:])
	if num == 0 || num > gptMaxEntries || entSize < 128 || entSize%8 != 0 || entSize > 4096 || int64(num)*int64(entSize) > gptMaxEntryBytes {
		return 0, fmt.Errorf("GPT entries (%d of %d bytes) are out of bounds", num, entSize)
	}
	if part < 1 || uint32(part) > num {
		return 0, fmt.Errorf("GPT partition %d: the table has %d entries", part, num)
	}
	entBytes := int64(num) * int64(entSize)
	entSectors := (entBytes + ss - 1) / ss
	if entLBA < 2 || entLBA+entSectors > sectors {
		return 0, fmt.Errorf("GPT entries at LBA %d are out of the disk", entLBA)
	}
	ents := make([]byte, entBytes)
	if _, err := d.ReadAt(ents, entLBA*ss); err != nil {
		return 0, fmt.Errorf("read the GPT entries: %w", err)
	}
	if crc32.ChecksumIEEE(ents) != binary.LittleEndian.Uint32(h[gptOffEntsCRC:]) {
		return 0, errors.New("the GPT entries' CRC is wrong")
	}
	entry := func(i int) []byte { return ents[int64(i)*int64(entSize) : int64(i+1)*int64(entSize)] }
	used := func(e []byte) bool { return !bytes.Equal(e[:16], make([]byte, 16)) }
	e := entry(part - 1)
	if !used(e) {
		return 0, fmt.Errorf("GPT partition %d is empty", part)
	}
	first, last := binary.LittleEndian.Uint64(e[gptEntOffFirst:]), binary.LittleEndian.Uint64(e[gptEntOffLast:])
	for i := range int(num) {
		if o := entry(i); i != part-1 && used(o) && binary.LittleEndian.Uint64(o[gptEntOffFirst:]) > first {
			return 0, fmt.Errorf("GPT partition %d is not the last: partition %d follows it", part, i+1)
		}
	}
	// The backup header takes the last sector, its entries those before.
	backupLBA := sectors - 1
	backupEnts := backupLBA - entSectors
	lastUsable := backupEnts - 1
	if int64(last) > lastUsable || lastUsable <= int64(first) {
		return 0, fmt.Errorf("GPT partition %d ends past where the disk can hold it (LBA %d, last usable %d)", part, last, lastUsable)
	}
	if int64(binary.LittleEndian.Uint64(h[gptOffLast:])) > lastUsable {
		return 0, errors.New("the disk is smaller than the GPT's last usable LBA")
	}
	binary.LittleEndian.PutUint64(e[gptEntOffLast:], uint64(lastUsable))
	entsCRC := crc32.ChecksumIEEE(ents)

	binary.LittleEndian.PutUint64(h[gptOffBackup:], uint64(backupLBA))
	binary.LittleEndian.PutUint64(h[gptOffLast:], uint64(lastUsable))
	binary.LittleEndian.PutUint32(h[gptOffEntsCRC:], entsCRC)
	binary.LittleEndian.PutUint32(h[gptOffHdrCRC:], gptHeaderCRC(h, hdrSize))

	b := bytes.Clone(h)
	binary.LittleEndian.PutUint64(b[gptOffCurrent:], uint64(backupLBA))
	binary.LittleEndian.PutUint64(b[gptOffBackup:], 1)
	binary.LittleEndian.PutUint64(b[gptOffEntries:], uint64(backupEnts))
	binary.LittleEndian.PutUint32(b[gptOffHdrCRC:], gptHeaderCRC(b, hdrSize))

	// The backup first, then the primary: a crash between leaves a
	// primary that is whole for the old size (and a backup past it that
	// firmware ignores, since the primary says where its backup is).
	for _, w := range []struct {
		what string
		b    []byte
		at   int64
	}{
		{"backup GPT entries", ents, backupEnts * ss},
		{"backup GPT header", b, backupLBA * ss},
		{"GPT entries", ents, entLBA * ss},
		{"GPT header", h, ss},
	} {
		if _, err := d.WriteAt(w.b, w.at); err != nil {
			return 0, fmt.Errorf("write the %s: %w", w.what, err)
		}
	}
	if err := growProtectiveMBR(d, sectors); err != nil {
		return 0, err
	}
	return (lastUsable - int64(first) + 1) * ss, nil
}

// growProtectiveMBR makes the protective MBR's partition cover the disk
// (up to what 32 bits count), as partitioning tools write it.
func growProtectiveMBR(d Disk, sectors int64) error {
	mbr, ents, err := readMBR(d)
	if err != nil {
		return nil // no protective MBR to keep in step
	}
	for i, e := range ents {
		if e.typ == 0xee {
			binary.LittleEndian.PutUint32(mbr[446+16*i+12:], uint32(min(sectors-1, 1<<32-1)))
			if _, err := d.WriteAt(mbr, 0); err != nil {
				return fmt.Errorf("write the protective MBR: %w", err)
			}
			return nil
		}
	}
	return nil
}
