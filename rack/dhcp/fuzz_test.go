package dhcp

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// FuzzHandle feeds raw bytes to the packet handling of a managed and a
// proxy server: nothing panics, every reply is a DHCP reply that parses
// again, and the state stays within its bounds.
func FuzzHandle(f *testing.F) {
	pxe := pxeMods(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003016")
	d, _ := dhcpv4.NewDiscovery(macN(1), pxe...)
	f.Add(d.ToBytes(), uint16(ServerPort))
	d, _ = dhcpv4.NewDiscovery(macN(2), dhcpv4.WithUserClass("iPXE", false))
	f.Add(d.ToBytes(), uint16(ServerPort))
	r, _ := dhcpv4.New(dhcpv4.WithHwAddr(macN(3)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.20.0.100"))))
	f.Add(r.ToBytes(), uint16(ServerPort))
	r.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeDecline))
	f.Add(r.ToBytes(), uint16(ServerPort))
	r, _ = dhcpv4.New(append(pxe, dhcpv4.WithHwAddr(macN(4)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(net.ParseIP("10.20.0.150")))...)
	f.Add(r.ToBytes(), uint16(PXEPort))
	f.Add([]byte{1, 1, 6, 0}, uint16(ServerPort))

	cfg := managedConfig()
	cfg.MaxOffers = 8
	managed := newHarness(&testing.T{}, cfg, f.TempDir())
	proxy := newHarness(&testing.T{}, proxyConfig(), f.TempDir())
	f.Cleanup(func() { managed.s.Close() })
	f.Fuzz(func(t *testing.T, raw []byte, port uint16) {
		for _, h := range []*harness{managed, proxy} {
			h.clk.Add(time.Second)
			reply, dst := h.s.handle(h.l, int(port), raw, &net.UDPAddr{IP: net.IPv4(10, 20, 0, 150), Port: 68})
			if reply == nil {
				continue
			}
			if dst == nil || reply.OpCode != dhcpv4.OpcodeBootReply {
				t.Fatalf("reply %v to %v", reply, dst)
			}
			if _, err := dhcpv4.FromBytes(reply.ToBytes()); err != nil {
				t.Fatalf("the reply does not parse: %v", err)
			}
		}
		tb := managed.s.table
		tb.mu.Lock()
		defer tb.mu.Unlock()
		if len(tb.offers) > cfg.MaxOffers || len(tb.offers) != len(tb.offeredIP) || len(tb.records) > 3+1 {
			t.Fatalf("state out of bounds: %d offers, %d by address, %d records", len(tb.offers), len(tb.offeredIP), len(tb.records))
		}
	})
}

// FuzzParseLeaseLog: any file parses without error (damage is skipped and
// counted), and every record read survives its own round trip.
func FuzzParseLeaseLog(f *testing.F) {
	until := time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC)
	good := encodeRecord(Record{IP: netip.MustParseAddr("10.20.0.100"), MAC: "52:54:00:12:34:56", State: StateBound, Until: until, Hostname: "n1"})
	f.Add(good)
	f.Add(append(append([]byte{}, good...), good[:20]...))
	f.Add(encodeRecord(Record{IP: netip.MustParseAddr("10.20.0.101"), State: StateDeclined, Until: until}))
	f.Add([]byte("00000000 {}\n"))
	f.Add([]byte("x"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		recs, bad, err := ParseLeaseLog(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("ParseLeaseLog: %v", err)
		}
		if bad < 0 || len(recs) > bytes.Count(raw, []byte("\n")) {
			t.Fatalf("%d records from %d lines", len(recs), bytes.Count(raw, []byte("\n")))
		}
		for ip, r := range recs {
			back, err := ParseRecord(bytes.TrimSuffix(encodeRecord(r), []byte("\n")))
			if err != nil || back.IP != ip || back.MAC != r.MAC || back.State != r.State || !back.Until.Equal(r.Until) {
				t.Fatalf("round trip of %+v: %+v, %v", r, back, err)
			}
		}
	})
}
