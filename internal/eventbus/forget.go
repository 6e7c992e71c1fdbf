package eventbus

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ForgettingAfter returns a JetStream context on js's connection that
// forgets an asynchronous publish JetStream has not answered within d.
// Without that nats.go keeps every unanswered publish pending for as long
// as the connection lasts, and once 4000 are (a JetStream that stops
// answering while the connection stays up: a lost stream, a server out of
// file descriptors) every later publish fails at once, until the process
// is restarted. It returns js itself if d is not positive.
func ForgettingAfter(js jetstream.JetStream, d time.Duration) jetstream.JetStream {
	if d <= 0 {
		return js
	}
	own, err := jetstream.New(js.Conn(), jetstream.WithPublishAsyncTimeout(d))
	if err != nil { // only on an invalid option, and d is positive
		return js
	}
	return own
}
