package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/netns"
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/region/follower"
	"github.com/rackplane/rackplane/region/ingest"
	"github.com/rackplane/rackplane/region/postgres"
)

// The junk TestJunkTrafficBoundsTheLog sends, by protocol.
const (
	junkTFTP = 4000
	junkHTTP = 3000
	junkDHCP = 3000
)

// junkCaused are the event types junk boot traffic can cause: the rack's
// reports of it, and the machines the region discovers from it.
var junkCaused = append([]string{events.TypeMachineCreated, events.TypeBootDecisionSet}, postgres.TelemetryTypes...)

// TestJunkTrafficBoundsTheLog runs regiond and rackd as they ship (no
// flag changes the limits: -boot-events-* 1000 at once and 20/s in all,
// 100 and 1/s a source; -discovery-per-rack-per-minute 60), rackd in a
// network namespace of its own with proxy DHCP on its eth0, and sends
// it 10,000 requests nobody authenticated, from random sources: 4,000
// TFTP packets (read requests for missing files, for configs of random
// MACs, for a file that exists, never acknowledged; write requests;
// garbage) and 3,000 HTTP requests (missing files, iPXE scripts of random
// MACs, a file that exists, POSTs), each from its own address of
// 127.0.0.0/8 on the namespace's loopback, and 3,000 DHCP packets of
// random MACs (PXE and not) and garbage, broadcast on the segment.
//
// The bound, over the T seconds the junk took to send (the rate buckets
// refill only meanwhile) and the S seconds until the rack stopped:
//
//	boot events  ≤ 2·(1000 + 20·T)   a hand-off or refusal, and a transfer, per request reported
//	summaries    ≤ S/60 + 2          boot_requests_summarized, one a minute and one at the stop
//	DHCP         ≤ S/10 + 2          dhcp_leases_changed, one per -dhcp-event-interval
//	machines     ≤ 60 in any minute  two events each (machine_created, boot_decision_set)
//	refusals     ≤ S/60 + 2          discovery_refused
//
// in bytes (pg_column_size of the rows) at most 1 KiB a boot or machine
// event, 4 KiB a summary, 64 KiB a DHCP event (256 changes at most).
// Every HTTP request is accounted for exactly: reported one by one or
// counted in a summary; every discovery candidate made a machine or was
// counted refused.
func TestJunkTrafficBoundsTheLog(t *testing.T) {
	endToEnd(t)
	ctx := context.Background()
	seg := netnstest.New(t)
	rackNS := seg.Host("rack", "02:00:00:00:31:02", "10.31.0.2/24")
	junkNS := seg.Host("junk", "02:00:00:00:31:09", "10.31.0.9/24")

	ns := natsserver.StartTest(t)
	netnstest.Forward(t, rackNS, "127.0.0.1:4222", ns.Server.Addr().String())
	js, err := jetstream.New(ns.Connect())
	if err != nil {
		t.Fatal(err)
	}
	dbURL := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	region := start(t, "regiond", "-no-nats-callout", "-nats-url", ns.URL, "-database-url", dbURL, "-http-addr", freeAddr(t))

	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "junk.bin"), make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	rackd := startCmd(t, "rackd", exec.Command("ip", "netns", "exec", rackNS, filepath.Join(binDir, "rackd"),
		"-name", "junk-rack", "-data-dir", t.TempDir(), "-insecure-nats", "-nats-url", "nats://127.0.0.1:4222",
		"-http-addr", ":5248", "-tftp-addr", ":69", "-boot-root", root, "-import-system-bootloaders=false",
		"-dhcp-mode", "proxy", "-dhcp-interface", "eth0"))
	rackMetrics := func() (map[string]float64, error) {
		return scrape(netnstest.HTTPClient(rackNS), "http://127.0.0.1:5248/metrics")
	}
	eventually(t, 30*time.Second, "the rack joined and the region's follower started", func() error {
		if _, err := rackMetrics(); err != nil {
			return err
		}
		var racks, cursors int
		if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM racks), (SELECT count(*) FROM follower_cursors)`).Scan(&racks, &cursors); err != nil {
			return err
		}
		if racks != 1 || cursors != 1 {
			return fmt.Errorf("%d racks, %d follower cursors", racks, cursors)
		}
		return nil
	})
	var sizeBefore int64
	if err := pool.QueryRow(ctx, `SELECT pg_total_relation_size('events')`).Scan(&sizeBefore); err != nil {
		t.Fatal(err)
	}

	dropsBefore := udpDrops(t, rackNS)
	// The junk, three senders at once.
	began := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for _, send := range []func() error{
		func() error {
			return netns.Do(rackNS, func() error { return junkTFTPRequests(rand.New(rand.NewPCG(1, 1))) })
		},
		func() error {
			return netns.Do(rackNS, func() error { return junkHTTPRequests(rand.New(rand.NewPCG(2, 2))) })
		},
		func() error {
			return netns.Do(junkNS, func() error { return junkDHCPPackets(rand.New(rand.NewPCG(3, 3))) })
		},
	} {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- send() }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	sent := time.Since(began)
	// A flood of datagrams overflows socket buffers: the kernel drops
	// what the servers cannot read in time, and counts it.
	dropped := udpDrops(t, rackNS) - dropsBefore

	// The transfers nobody acknowledges end after rackd's retries; then
	// rackd stops, sending its last summary.
	var summarizedMetric float64
	eventually(t, 90*time.Second, "no TFTP transfer left in flight", func() error {
		m, err := rackMetrics()
		if err != nil {
			return err
		}
		if n := m["rackplane_tftp_transfers_in_flight"]; n != 0 {
			return fmt.Errorf("%g in flight", n)
		}
		summarizedMetric = m["rackplane_boot_events_summarized_total"]
		return nil
	})
	if err := rackd.Stop(); err != nil {
		t.Fatalf("rackd: %v", err)
	}
	stopped := time.Since(began)
	eventually(t, 60*time.Second, "the region ingested every rack event", func() error {
		c, err := js.Consumer(ctx, events.RackStream, ingest.ConsumerName)
		if err != nil {
			return err
		}
		ci, err := c.Info(ctx)
		if err != nil {
			return err
		}
		if ci.NumPending != 0 || ci.NumAckPending != 0 {
			return fmt.Errorf("%d pending, %d awaiting acknowledgement", ci.NumPending, ci.NumAckPending)
		}
		return nil
	})
	eventually(t, 60*time.Second, "the follower past the last hand-off", func() error {
		var last, cur string
		err := pool.QueryRow(ctx, `SELECT (SELECT txid::text || '-' || position FROM events WHERE type = $1 ORDER BY txid DESC, position DESC LIMIT 1),
			(SELECT cursor FROM follower_cursors WHERE name = $2)`, events.TypeBootHandoff, follower.Name).Scan(&last, &cur)
		if err != nil {
			return err
		}
		l, err1 := postgres.ParseCursor(last)
		c, err2 := postgres.ParseCursor(cur)
		if err1 != nil || err2 != nil || c.TxID < l.TxID || c.TxID == l.TxID && c.Position < l.Position {
			return fmt.Errorf("follower at %s, last hand-off at %s", cur, last)
		}
		return nil
	})
	// regiond sums up the refused discoveries of its last interval as
	// it stops.
	if err := region.Stop(); err != nil {
		t.Fatalf("regiond: %v", err)
	}

	// What the log holds of it.
	counts, bytes := map[string]int64{}, map[string]int64{}
	rows, err := pool.Query(ctx, `SELECT type, count(*), sum(pg_column_size(e.*))::bigint FROM events e WHERE type = ANY($1) GROUP BY type`, junkCaused)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var typ string
		var n, b int64
		if err := rows.Scan(&typ, &n, &b); err != nil {
			t.Fatal(err)
		}
		counts[events.Name(typ)], bytes[events.Name(typ)] = n, b
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var sizeAfter int64
	if err := pool.QueryRow(ctx, `SELECT pg_total_relation_size('events')`).Scan(&sizeAfter); err != nil {
		t.Fatal(err)
	}
	var total, totalBytes int64
	for typ, n := range counts {
		total += n
		totalBytes += bytes[typ]
	}

	T, S := math.Ceil(sent.Seconds()), math.Ceil(stopped.Seconds())
	minutes := math.Ceil(S / 60)
	bootBound := int64(2 * (1000 + 20*T))
	summaryBound := int64(S/60 + 2)
	dhcpBound := int64(S/10 + 2)
	machineBound := int64(60 * minutes)
	bound := bootBound + summaryBound + dhcpBound + 2*machineBound + summaryBound
	byteBound := (bootBound+2*machineBound+summaryBound)*1024 + summaryBound*4096 + dhcpBound*64*1024
	t.Logf("%d junk requests (%d TFTP, %d HTTP, %d DHCP) sent in %s; rackd stopped %s after the first", junkTFTP+junkHTTP+junkDHCP,
		junkTFTP, junkHTTP, junkDHCP, sent.Round(time.Millisecond), stopped.Round(time.Millisecond))
	t.Logf("events they caused: %d, %d bytes (bound %d events, %d bytes); by type %v, bytes %v; events table and indexes grew %d bytes",
		total, totalBytes, bound, byteBound, counts, bytes, sizeAfter-sizeBefore)

	boot := counts["boot_handoff"] + counts["boot_transfer"] + counts["boot_request_rejected"]
	switch {
	case boot > bootBound:
		t.Errorf("%d boot events, bound 2·(1000 + 20·%g) = %d", boot, T, bootBound)
	case counts["boot_requests_summarized"] > summaryBound:
		t.Errorf("%d boot_requests_summarized events, bound %d", counts["boot_requests_summarized"], summaryBound)
	case counts["dhcp_leases_changed"] > dhcpBound:
		t.Errorf("%d dhcp_leases_changed events, bound %d", counts["dhcp_leases_changed"], dhcpBound)
	case counts["discovery_refused"] > summaryBound:
		t.Errorf("%d discovery_refused events, bound %d", counts["discovery_refused"], summaryBound)
	case total > bound || totalBytes > byteBound:
		t.Errorf("%d events, %d bytes; bound %d events, %d bytes", total, totalBytes, bound, byteBound)
	}
	for _, typ := range []string{"boot_handoff", "boot_transfer", "boot_request_rejected", "machine_created", "boot_decision_set"} {
		if counts[typ] > 0 && bytes[typ]/counts[typ] > 1024 {
			t.Errorf("%s events of %d bytes on average, bound 1 KiB", typ, bytes[typ]/counts[typ])
		}
	}

	// Machines: at most 60 discovered in any minute.
	var machines, worstMinute int64
	if err := pool.QueryRow(ctx, `SELECT count(*), coalesce(max(n), 0) FROM (
			SELECT count(*) OVER (ORDER BY created_at RANGE BETWEEN interval '60 seconds' PRECEDING AND CURRENT ROW) AS n
			FROM machines WHERE origin = 'discovered') w`).Scan(&machines, &worstMinute); err != nil {
		t.Fatal(err)
	}
	if worstMinute > 60 || machines > machineBound {
		t.Errorf("%d machines discovered, %d in one minute; want at most 60 a minute", machines, worstMinute)
	}

	// Accounting: every HTTP request reported or summarised, every
	// discovery candidate a machine or a refusal.
	reported := map[string]int64{}
	var candidates int64
	if err := scanEvents(ctx, pool, []string{events.TypeBootHandoff, events.TypeBootRequestRejected}, func(e events.Event) error {
		var d struct {
			Protocol, MAC, MachineID string
		}
		if err := e.DecodeData(&d); err != nil {
			return err
		}
		reported[d.Protocol]++
		if e.Type == events.TypeBootHandoff && d.MAC != "" && d.MachineID == "" {
			candidates++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	summarized := map[string]int64{}
	var summarizedAll int64
	if err := scanEvents(ctx, pool, []string{events.TypeBootRequestsSummarized}, func(e events.Event) error {
		var s events.BootRequestsSummarized
		if err := e.DecodeData(&s); err != nil {
			return err
		}
		summarizedAll += s.Requests
		for p, n := range s.ByProtocol {
			summarized[p] += n
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var refused int64
	if err := scanEvents(ctx, pool, []string{events.TypeDiscoveryRefused}, func(e events.Event) error {
		var r events.DiscoveryRefused
		if err := e.DecodeData(&r); err != nil {
			return err
		}
		refused += r.Refused
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("reported one by one %v, summarised %v (rackplane_boot_events_summarized_total %g); %d UDP datagrams dropped by the rack's kernel (full socket buffers); %d discovery candidates reported: %d machines, %d refused",
		reported, summarized, summarizedMetric, dropped, candidates, machines, refused)
	if got := reported["http"] + summarized["http"]; got != junkHTTP {
		t.Errorf("%d HTTP requests reported or summarised, want all %d", got, junkHTTP)
	}
	// Every TFTP packet the server read is reported or summarised; the
	// others the kernel dropped (DHCP's drops count there too).
	if got := reported["tftp"] + summarized["tftp"]; got > junkTFTP || got < junkTFTP-dropped {
		t.Errorf("%d TFTP requests reported or summarised, want the %d sent less at most the %d dropped", got, junkTFTP, dropped)
	}
	if float64(summarizedAll) != summarizedMetric {
		t.Errorf("summaries count %d requests, rackplane_boot_events_summarized_total %g", summarizedAll, summarizedMetric)
	}
	if machines+refused != candidates || refused == 0 {
		t.Errorf("%d discovery candidates: %d machines and %d refused", candidates, machines, refused)
	}
}

// junkSource is a random address of 127.0.0.0/8 other than 127.0.0.1:
// every one is on the loopback interface.
func junkSource(rng *rand.Rand) net.IP {
	return net.IPv4(127, byte(1+rng.IntN(254)), byte(rng.IntN(256)), byte(rng.IntN(256)))
}

func junkMAC(rng *rand.Rand) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}
}

// junkTFTPRequests sends junkTFTP packets to 127.0.0.1:69, each from a
// socket of its own on a random source address, closed at once: nobody
// acknowledges anything.
func junkTFTPRequests(rng *rand.Rand) error {
	server := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 69}
	rq := func(op byte, name string) []byte { return []byte("\x00" + string(op) + name + "\x00octet\x00") }
	for i := range junkTFTP {
		var p []byte
		switch i % 5 {
		case 0:
			p = rq(1, fmt.Sprintf("junk/%08x", rng.Uint32()))
		case 1:
			p = rq(1, "pxelinux.cfg/01-"+strings.ReplaceAll(junkMAC(rng).String(), ":", "-"))
		case 2:
			p = rq(1, "junk.bin")
		case 3:
			p = rq(2, fmt.Sprintf("upload/%08x", rng.Uint32()))
		default:
			p = []byte{0, byte(6 + rng.IntN(200)), byte(rng.IntN(256))}
		}
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: junkSource(rng)})
		if err != nil {
			return err
		}
		_, err = c.WriteToUDP(p, server)
		c.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// junkHTTPRequests makes junkHTTP requests of 127.0.0.1:5248, each on a
// connection of its own from a random source address.
func junkHTTPRequests(rng *rand.Rand) error {
	for i := range junkHTTP {
		var req string
		switch i % 6 {
		case 0, 1:
			req = fmt.Sprintf("GET /junk/%08x HTTP/1.1", rng.Uint32())
		case 2, 3:
			req = "GET /ipxe/" + strings.ReplaceAll(junkMAC(rng).String(), ":", "-") + ".ipxe HTTP/1.1"
		case 4:
			req = "GET /junk.bin HTTP/1.1"
		default:
			req = fmt.Sprintf("POST /junk/%08x HTTP/1.1", rng.Uint32())
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: junkSource(rng)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp4", "127.0.0.1:5248")
		if err != nil {
			return err
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = io.WriteString(c, req+"\r\nHost: rack\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		if err == nil {
			_, err = io.Copy(io.Discard, c)
		}
		c.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", req, err)
		}
	}
	return nil
}

// junkDHCPPackets broadcasts junkDHCP packets on eth0: discovers of random
// MACs from PXE clients and from others, and garbage.
func junkDHCPPackets(rng *rand.Rand) error {
	conn, err := server4.NewIPv4UDPConn("eth0", &net.UDPAddr{Port: dhcpv4.ClientPort})
	if err != nil {
		return err
	}
	defer conn.Close()
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	for i := range junkDHCP {
		var b []byte
		switch i % 3 {
		case 0:
			d, err := dhcpv4.NewDiscovery(junkMAC(rng), dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
				dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)))
			if err != nil {
				return err
			}
			b = d.ToBytes()
		case 1:
			d, err := dhcpv4.NewDiscovery(junkMAC(rng))
			if err != nil {
				return err
			}
			b = d.ToBytes()
		default:
			b = make([]byte, 20+rng.IntN(300))
			for j := range b {
				b[j] = byte(rng.IntN(256))
			}
		}
		if _, err := conn.WriteTo(b, bcast); err != nil {
			return err
		}
	}
	return nil
}

// udpDrops is how many UDP datagrams the kernel of namespace ns dropped
// for want of room in a socket's buffer (RcvbufErrors of /proc/net/snmp).
func udpDrops(t *testing.T, ns string) int64 {
	t.Helper()
	out, err := netnstest.Run(ns, "cat", "/proc/net/snmp")
	if err != nil {
		t.Fatalf("/proc/net/snmp in %s: %v %s", ns, err, out)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == "RcvbufErrors" && i < len(f) {
				n, err := strconv.ParseInt(f[i], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
	}
	t.Fatalf("no Udp RcvbufErrors in /proc/net/snmp of %s:\n%s", ns, out)
	return 0
}

// scrape reads the unlabelled samples of a /metrics page, and the sums of
// the labelled ones by name.
func scrape(c *http.Client, url string) (map[string]float64, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name := line[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j]
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[name] += v
		}
	}
	return out, sc.Err()
}

// scanEvents calls f with each event of the log of one of types.
func scanEvents(ctx context.Context, pool *pgxpool.Pool, types []string, f func(e events.Event) error) error {
	rows, err := pool.Query(ctx, `SELECT type, data FROM events WHERE type = ANY($1) ORDER BY position`, types)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var typ string
		var data []byte
		if err := rows.Scan(&typ, &data); err != nil {
			return err
		}
		if err := f(events.Event{Type: typ, Data: data}); err != nil {
			return err
		}
	}
	return rows.Err()
}
