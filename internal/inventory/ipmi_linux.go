//go:build linux && (amd64 || arm64)

package inventory

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The Linux IPMI device interface, include/uapi/linux/ipmi.h, as laid
// out on LP64 Linux: amd64 and arm64 alike (pointers and long of 8 bytes,
// aligned to 8). The structs below repeat the C layouts field for field,
// explicit padding included; the checks after them fail the build if a
// size or an offset differs.
const (
	ipmiSystemInterfaceAddrType = 0x0c // IPMI_SYSTEM_INTERFACE_ADDR_TYPE
	ipmiBMCChannel              = 0x0f // IPMI_BMC_CHANNEL
	ipmiResponseRecvType        = 1    // IPMI_RESPONSE_RECV_TYPE
	ipmiMaxAddrSize             = 32   // IPMI_MAX_ADDR_SIZE
	ipmiMaxMsgLength            = 272  // IPMI_MAX_MSG_LENGTH

	// _IOR('i', 13, struct ipmi_req) and _IOWR('i', 11, struct
	// ipmi_recv), in asm-generic's encoding, which amd64 and arm64 use:
	// direction (read 2, write 1) in bits 30-31, size in 16-29, type
	// in 8-15, number in 0-7.
	ipmictlSendCommand     = 2<<30 | 40<<16 | 'i'<<8 | 13
	ipmictlReceiveMsgTrunc = 3<<30 | 48<<16 | 'i'<<8 | 11
)

// struct ipmi_system_interface_addr { int addr_type; short channel;
// unsigned char lun; }: 8 bytes.
type ipmiSystemInterfaceAddr struct {
	addrType int32
	channel  int16
	lun      uint8
	_        uint8
}

// struct ipmi_addr, what a received message's address is copied into:
// { int addr_type; short channel; char data[IPMI_MAX_ADDR_SIZE]; }.
type ipmiAddr struct {
	addrType int32
	channel  int16
	data     [ipmiMaxAddrSize]byte
	_        [2]byte
}

// struct ipmi_msg { unsigned char netfn, cmd; unsigned short data_len;
// unsigned char *data; }: 16 bytes.
type ipmiMsg struct {
	netfn   uint8
	cmd     uint8
	dataLen uint16
	_       [4]byte
	data    unsafe.Pointer
}

// struct ipmi_req { unsigned char *addr; unsigned int addr_len; long
// msgid; struct ipmi_msg msg; }: 40 bytes.
type ipmiReq struct {
	addr    unsafe.Pointer
	addrLen uint32
	_       [4]byte
	msgid   int64
	msg     ipmiMsg
}

// struct ipmi_recv { int recv_type; unsigned char *addr; unsigned int
// addr_len; long msgid; struct ipmi_msg msg; }: 48 bytes.
type ipmiRecv struct {
	recvType int32
	_        [4]byte
	addr     unsafe.Pointer
	addrLen  uint32
	_        [4]byte
	msgid    int64
	msg      ipmiMsg
}

// Each line fails to compile (a constant index out of range) unless the
// size or offset is the C one.
var (
	_ = [1]struct{}{}[unsafe.Sizeof(ipmiSystemInterfaceAddr{})-8]
	_ = [1]struct{}{}[unsafe.Sizeof(ipmiAddr{})-40]
	_ = [1]struct{}{}[unsafe.Sizeof(ipmiMsg{})-16]
	_ = [1]struct{}{}[unsafe.Offsetof(ipmiMsg{}.data)-8]
	_ = [1]struct{}{}[unsafe.Sizeof(ipmiReq{})-40]
	_ = [1]struct{}{}[unsafe.Offsetof(ipmiReq{}.addrLen)-8]
	_ = [1]struct{}{}[unsafe.Offsetof(ipmiReq{}.msgid)-16]
	_ = [1]struct{}{}[unsafe.Offsetof(ipmiReq{}.msg)-24]
	_ = [1]struct{}{}[unsafe.Sizeof(ipmiRecv{})-48]
	_ = [1]struct{}{}[unsafe.Offsetof(ipmiRecv{}.addr)-8]
	_ = [1]struct{}{}[unsafe.Offsetof(ipmiRecv{}.addrLen)-16]
	_ = [1]struct{}{}[unsafe.Offsetof(ipmiRecv{}.msgid)-24]
	_ = [1]struct{}{}[unsafe.Offsetof(ipmiRecv{}.msg)-32]
)

// maxStrayAnswers bounds the messages read while waiting for an answer
// that are not it (the answer to an earlier request that timed out, an
// event): a device that sends nothing but those ends the wait.
const maxStrayAnswers = 32

// ipmiDevice is an open IPMI device node.
type ipmiDevice struct {
	path  string
	fd    int
	msgid int64
}

// openIPMI opens the first of paths that is an IPMI device;
// errNoIPMIDevice when none is there. A node without a driver behind it
// (ENODEV, ENXIO) counts as none.
func openIPMI(paths []string) (*ipmiDevice, error) {
	for _, p := range paths {
		fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
		switch {
		case err == nil:
			return &ipmiDevice{path: p, fd: fd}, nil
		case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENOTDIR):
			continue
		default:
			return nil, fmt.Errorf("open %s: %w", p, err)
		}
	}
	return nil, errNoIPMIDevice
}

func (d *ipmiDevice) Close() error { return unix.Close(d.fd) }

// ask sends a request to the BMC through the system interface and waits
// for the answer with the request's msgid, at most ipmiTimeout (less if
// ctx ends first). It returns the answer's data, completion code first.
func (d *ipmiDevice) ask(ctx context.Context, netfn, cmd byte, data []byte) ([]byte, error) {
	if len(data) == 0 || len(data) > ipmiMaxMsgLength {
		return nil, fmt.Errorf("request of %d bytes", len(data))
	}
	d.msgid++
	// The kernel reads and writes the memory the structs point to:
	// pinned, so that no garbage collection moves or frees it during
	// the ioctls.
	var pin runtime.Pinner
	defer pin.Unpin()
	addr := &ipmiSystemInterfaceAddr{addrType: ipmiSystemInterfaceAddrType, channel: ipmiBMCChannel}
	body := append([]byte(nil), data...)
	req := &ipmiReq{addr: unsafe.Pointer(addr), addrLen: uint32(unsafe.Sizeof(*addr)), msgid: d.msgid,
		msg: ipmiMsg{netfn: netfn, cmd: cmd, dataLen: uint16(len(body)), data: unsafe.Pointer(&body[0])}}
	pin.Pin(addr)
	pin.Pin(&body[0])
	pin.Pin(req)
	if err := d.ioctl(ipmictlSendCommand, unsafe.Pointer(req)); err != nil {
		return nil, fmt.Errorf("send netfn %#02x cmd %#02x: %w", netfn, cmd, err)
	}

	deadline := time.Now().Add(ipmiTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	from := &ipmiAddr{}
	buf := make([]byte, ipmiMaxMsgLength)
	recv := &ipmiRecv{}
	pin.Pin(from)
	pin.Pin(&buf[0])
	pin.Pin(recv)
	for stray := 0; stray <= maxStrayAnswers; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("netfn %#02x cmd %#02x: no answer within %s", netfn, cmd, ipmiTimeout)
		}
		// Waits of 100ms at most, so that ctx ending is seen soon.
		fds := []unix.PollFd{{Fd: int32(d.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(min(left, 100*time.Millisecond)/time.Millisecond)+1)
		if errors.Is(err, unix.EINTR) || err == nil && n == 0 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("poll: %w", err)
		}
		*recv = ipmiRecv{addr: unsafe.Pointer(from), addrLen: uint32(unsafe.Sizeof(*from)),
			msg: ipmiMsg{dataLen: uint16(len(buf)), data: unsafe.Pointer(&buf[0])}}
		err = d.ioctl(ipmictlReceiveMsgTrunc, unsafe.Pointer(recv))
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			continue // readable, yet nothing queued: wait again
		case err != nil && !errors.Is(err, unix.EMSGSIZE): // EMSGSIZE: truncated to buf, which is all the kernel holds anyway
			return nil, fmt.Errorf("receive: %w", err)
		}
		if recv.recvType != ipmiResponseRecvType || recv.msgid != d.msgid || recv.msg.netfn != netfn|1 || recv.msg.cmd != cmd {
			stray++
			continue
		}
		return append([]byte(nil), buf[:min(int(recv.msg.dataLen), len(buf))]...), nil
	}
	return nil, fmt.Errorf("netfn %#02x cmd %#02x: %d messages that are not the answer", netfn, cmd, maxStrayAnswers)
}

func (d *ipmiDevice) ioctl(req uintptr, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), req, uintptr(arg))
	if errno != 0 {
		return os.NewSyscallError("ioctl", errno)
	}
	return nil
}
