package lab

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// TestForwardDialsBesideTheLoop: a client whose dial into the namespace
// waits (dev inside still starting) holds up no other client: the next
// one is passed on and answered meanwhile.
func TestForwardDialsBesideTheLoop(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var dials atomic.Int32
	f := startForward(ln, func() (net.Conn, error) {
		// The first dial is the first client's: it waits for release.
		if dials.Add(1) == 1 {
			<-release
		}
		return net.Dial("tcp", echo.Addr().String())
	})
	defer func() { close(release); f.close(); f.wg.Wait() }()

	first, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	// The first client's dial has begun (and waits) before the second
	// connects.
	time.Sleep(100 * time.Millisecond)
	second, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if err := second.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := second.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(second, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("the second client, while the first one's dial waits: %q %v", buf, err)
	}
}
