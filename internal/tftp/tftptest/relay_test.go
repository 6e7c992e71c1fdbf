package tftptest

import (
	"bytes"
	"net"
	"reflect"
	"testing"
	"time"
)

// echoServer answers each packet from a port of its own per client, as a
// TFTP server does: the first packet on the listening port, the rest on
// that port.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := l.ReadFromUDP(buf)
			if err != nil {
				return
			}
			tid, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				return
			}
			t.Cleanup(func() { tid.Close() })
			tid.WriteToUDP(buf[:n], from)
			go func() {
				buf := make([]byte, 1500)
				for {
					n, from, err := tid.ReadFromUDP(buf)
					if err != nil {
						return
					}
					tid.WriteToUDP(buf[:n], from)
				}
			}()
		}
	}()
	return l.LocalAddr().String()
}

// echoThrough starts an echoServer behind a relay with loss, and a client
// socket on loopback; the test's end closes them.
func echoThrough(t *testing.T, loss Loss) (*Relay, *net.UDPConn) {
	t.Helper()
	r, err := NewRelay(echoServer(t), loss)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return r, c
}

// TestRelayDropsEveryNth sends packets through a relay that drops every
// 5th each way: the request always passes, and what comes back is what
// both directions let through.
func TestRelayDropsEveryNth(t *testing.T) {
	r, c := echoThrough(t, Loss{Every: 5})
	rrq := []byte("\x00\x01f\x00octet\x00windowsize\x004\x00")
	c.WriteToUDP(rrq, r.Addr())
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, tid, err := c.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:n], rrq) || tid.Port == r.Addr().Port {
		t.Fatalf("got %q from %s, want the request echoed from another port", buf[:n], tid)
	}
	// To the server: packets 1-4 pass, 5 is dropped, 6-9 pass, 10 is
	// dropped... Back: the request's echo was packet 1 that way.
	var got []byte
	for i := byte(1); i <= 20; i++ {
		c.WriteToUDP([]byte{i}, tid)
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, _, err := c.ReadFromUDP(buf); err == nil && n == 1 {
			got = append(got, buf[0])
		}
	}
	// Packets 5, 10, 15, 20 lost on the way there; of the 16 echoes
	// (packets 2-17 back), 5, 10 and 15 lost on the way back: the 4th,
	// 9th and 14th echoes, which are 4, 11 and 17.
	want := []byte{1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 16, 18, 19}
	if !bytes.Equal(got, want) {
		t.Errorf("got back %v, want %v", got, want)
	}
	if f, d := r.Counts(ToServer); f != 17 || d != 4 {
		t.Errorf("to server: %d forwarded, %d dropped; want 17, 4", f, d)
	}
	if f, d := r.Counts(ToClient); f != 14 || d != 3 {
		t.Errorf("to client: %d forwarded, %d dropped; want 14, 3", f, d)
	}
	want2 := []Request{{Client: c.LocalAddr().String(), Op: 1, Name: "f", Mode: "octet", Options: map[string]string{"windowsize": "4"}}}
	if reqs := r.Requests(); !reflect.DeepEqual(reqs, want2) {
		t.Errorf("requests %+v, want %+v", reqs, want2)
	}
}

// TestRelayDelaysEachWay sends a burst through a relay with a Delay:
// every packet comes back, in order, no sooner than two delays after it
// left (one each way), and the burst is not spread out by the delay of
// each packet in turn.
func TestRelayDelaysEachWay(t *testing.T) {
	const delay = 100 * time.Millisecond
	r, c := echoThrough(t, Loss{Delay: delay})
	buf := make([]byte, 1500)
	start := time.Now()
	c.WriteToUDP([]byte("\x00\x01f\x00octet\x00"), r.Addr())
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, tid, err := c.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 2*delay {
		t.Fatalf("the request's echo came back after %s, want at least %s", took, 2*delay)
	}
	sent := map[byte]time.Time{}
	for i := byte(1); i <= 10; i++ {
		sent[i] = time.Now()
		c.WriteToUDP([]byte{i}, tid)
	}
	for i := byte(1); i <= 10; i++ {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		took := time.Since(sent[buf[0]])
		if n != 1 || buf[0] != i {
			t.Fatalf("got %v, want %d: out of order", buf[:n], i)
		}
		if took < 2*delay {
			t.Errorf("echo %d came back after %s, want at least %s", i, took, 2*delay)
		}
	}
	if took := time.Since(sent[1]); took > 2*delay+600*time.Millisecond { // one after the other: 20 delays
		t.Errorf("the burst took %s: its packets were delayed one after the other", took)
	}
}

// TestRelayRandomLossIsSeeded checks that the same seed loses the same
// packets of a transfer.
func TestRelayRandomLossIsSeeded(t *testing.T) {
	pattern := func() []byte {
		r, err := NewRelay(echoServer(t), Loss{Rate: 0.3, Seed: 42})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		c, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		defer c.Close()
		// The echo of the request may be lost too: ask again, as a
		// client would.
		buf := make([]byte, 1500)
		var tid *net.UDPAddr
		var got []byte
		for i := 0; i < 10 && tid == nil; i++ {
			c.WriteToUDP([]byte("\x00\x01f\x00octet\x00"), r.Addr())
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, from, err := c.ReadFromUDP(buf); err == nil {
				tid = from
			}
			got = append(got, 0)
		}
		if tid == nil {
			t.Fatal("no request came back in 10")
		}
		for i := byte(1); i <= 30; i++ {
			c.WriteToUDP([]byte{i}, tid)
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if n, _, err := c.ReadFromUDP(buf); err == nil && n == 1 {
				got = append(got, buf[0])
			}
		}
		return got
	}
	a, b := pattern(), pattern()
	if !bytes.Equal(a, b) || bytes.Count(a, []byte{0}) == len(a) || len(a)-bytes.Count(a, []byte{0}) == 30 {
		t.Errorf("two runs got back %v and %v, want the same, some lost", a, b)
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte("\x00\x01pxelinux.0\x00octet\x00blksize\x001468\x00windowsize\x008\x00"))
	f.Add([]byte("\x00\x02f\x00netascii\x00"))
	f.Add([]byte("\x00\x01f\x00octet\x00odd\x00"))
	f.Add([]byte("\x00\x06blksize\x00512\x00"))
	f.Fuzz(func(t *testing.T, p []byte) {
		if rq, err := ParseRequest(p); err == nil && rq.Op != 1 && rq.Op != 2 {
			t.Fatalf("request with opcode %d", rq.Op)
		}
		if opts, err := ParseOACK(p); err == nil && opts == nil {
			t.Fatal("OACK without options map")
		}
	})
}
