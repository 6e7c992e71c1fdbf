//go:build !linux || !(amd64 || arm64)

package inventory

import "context"

// openIPMI finds no device where the agent does not run: the Linux IPMI
// device interface is asked only on 64-bit Linux, whose struct layouts
// ipmi_linux.go has.
func openIPMI([]string) (*ipmiDevice, error) { return nil, errNoIPMIDevice }

type ipmiDevice struct{ path string }

func (*ipmiDevice) Close() error { return nil }

func (*ipmiDevice) ask(context.Context, byte, byte, []byte) ([]byte, error) {
	return nil, errNoIPMIDevice
}
