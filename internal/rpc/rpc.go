package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane"
)

// Reply is the envelope of every rpc answer.
type Reply struct {
	From   string          `json:"from,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *ErrorBody      `json:"error,omitempty"`
}

// ErrorBody is an error in a reply.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Err returns the reply's error as a *rackplane.Error, or nil.
func (r Reply) Err() error {
	if r.Error == nil {
		return nil
	}
	return &rackplane.Error{Code: r.Error.Code, Message: r.Error.Message}
}

// Decode unmarshals the result into v, or returns the reply's error.
func (r Reply) Decode(v any) error {
	if err := r.Err(); err != nil {
		return err
	}
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(r.Result, v); err != nil {
		return rackplane.WrapError(rackplane.EINTERNAL, err, "undecodable reply from %s", r.From)
	}
	return nil
}

// HandlerFunc answers one request. The returned value is the result; an
// error's rackplane code and client-safe message go to the caller, and its
// details only to the log.
type HandlerFunc func(ctx context.Context, data []byte) (any, error)

// Server answers requests on NATS subjects.
type Server struct {
	nc      *nats.Conn
	from    string
	log     *slog.Logger
	timeout time.Duration
	sem     chan struct{}

	mu   sync.Mutex
	subs []*nats.Subscription
	wg   sync.WaitGroup
}

// NewServer returns a server whose replies say they are from `from` (a rack
// id, or "region"). At most `concurrency` handlers run at once; each gets a
// context that ends after timeout.
func NewServer(nc *nats.Conn, from string, log *slog.Logger, concurrency int, timeout time.Duration) *Server {
	if concurrency <= 0 {
		concurrency = 64
	}
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return &Server{nc: nc, from: from, log: log, timeout: timeout, sem: make(chan struct{}, concurrency)}
}

// Handle subscribes h on subject, in queue group queue when it is not empty.
func (s *Server) Handle(subject, queue string, h HandlerFunc) error {
	cb := func(m *nats.Msg) {
		if m.Reply == "" {
			return // a request nobody waits for needs no work
		}
		s.sem <- struct{}{}
		s.wg.Add(1)
		go func() {
			defer func() { <-s.sem; s.wg.Done() }()
			s.serve(m, h)
		}()
	}
	var sub *nats.Subscription
	var err error
	if queue != "" {
		sub, err = s.nc.QueueSubscribe(subject, queue, cb)
	} else {
		sub, err = s.nc.Subscribe(subject, cb)
	}
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	s.mu.Lock()
	s.subs = append(s.subs, sub)
	s.mu.Unlock()
	// A request sent once Handle has returned must find the handler: the
	// server learns of a subscription asynchronously, so wait for it to
	// have this one (when connected; otherwise the subscription is sent
	// on connecting, before any request can be).
	if s.nc.IsConnected() {
		if err := s.nc.FlushTimeout(5 * time.Second); err != nil {
			s.log.Warn("rpc: the server may not have the subscription yet", "subject", subject, "err", err)
		}
	}
	return nil
}

// subjectKey carries the subject a request came on in a handler's context.
type subjectKey struct{}

// Subject returns the subject the request being handled came on. Under
// subject permissions it says who asked (a rack may publish only under its
// own id), which the body cannot: handlers authorise by it.
func Subject(ctx context.Context) string {
	s, _ := ctx.Value(subjectKey{}).(string)
	return s
}

func (s *Server) serve(m *nats.Msg, h HandlerFunc) {
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), subjectKey{}, m.Subject), s.timeout)
	defer cancel()
	reply := Reply{From: s.from}
	res, err := safeCall(ctx, h, m.Data)
	if raw, ok := res.(json.RawMessage); ok && err == nil {
		// A handler that returns encoded JSON (a cached snapshot) has it
		// sent as it is: re-encoding would re-scan it for every request.
		from, _ := json.Marshal(s.from)
		body := make([]byte, 0, len(raw)+len(from)+20)
		body = append(append(append(append(append(body, `{"from":`...), from...), `,"result":`...), raw...), '}')
		if err := m.Respond(body); err != nil {
			s.log.Warn("send rpc reply", "subject", m.Subject, "err", err)
		}
		return
	}
	if err == nil {
		reply.Result, err = json.Marshal(res)
	}
	if err != nil {
		code := rackplane.ErrorCode(err)
		if code == rackplane.EINTERNAL {
			s.log.Error("rpc handler failed", "subject", m.Subject, "err", err)
		}
		reply.Result = nil
		reply.Error = &ErrorBody{Code: code, Message: rackplane.ErrorMessage(err)}
	}
	body, err := json.Marshal(reply)
	if err != nil {
		s.log.Error("encode rpc reply", "subject", m.Subject, "err", err)
		return
	}
	if err := m.Respond(body); err != nil {
		s.log.Warn("send rpc reply", "subject", m.Subject, "err", err)
	}
}

// safeCall turns a handler's panic into an internal error: bad input must
// not take the process down.
func safeCall(ctx context.Context, h HandlerFunc, data []byte) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panic: %v", r)
		}
	}()
	return h(ctx, data)
}

// Close unsubscribes and waits for running handlers. It returns once the
// server has taken the unsubscriptions (or a second has passed): until
// then NATS may still route a request here, where nobody answers it any
// more, and its caller would wait out its timeout rather than learn at
// once that no one responds.
func (s *Server) Close() {
	s.mu.Lock()
	for _, sub := range s.subs {
		_ = sub.Unsubscribe()
	}
	s.subs = nil
	s.mu.Unlock()
	if s.nc.IsConnected() {
		_ = s.nc.FlushTimeout(time.Second)
	}
	s.wg.Wait()
}

// Call sends req to subject and decodes the one reply's result into out.
// With no responder the error has code EUNAVAILABLE; with no answer before
// ctx's deadline, ETIMEOUT.
func Call(ctx context.Context, nc *nats.Conn, subject string, req, out any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	m, err := nc.RequestWithContext(ctx, subject, body)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "nobody answers %s", subject)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return rackplane.WrapError(rackplane.ETIMEOUT, err, "no answer on %s in time", subject)
	case err != nil:
		return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "request on %s failed", subject)
	}
	var r Reply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return rackplane.WrapError(rackplane.EINTERNAL, err, "malformed reply on %s", subject)
	}
	return r.Decode(out)
}

// Gathered is the outcome of a scatter-gather.
type Gathered struct {
	Replies  []Reply       // in arrival order; at most one per responder
	Elapsed  time.Duration // until the last reply, or the deadline
	Complete bool          // every expected responder answered
	Dropped  int           // malformed or duplicate replies ignored
}

// Gather sends req to each responder on its own subject (subjects maps a
// responder's name to it) and collects replies until every one has
// answered or ctx ends — it never waits past ctx's deadline, and replies
// after it are dropped with the inbox. Each request has its own reply
// subject, and a reply counts as its responder's by that subject alone,
// whatever its body says: under subject permissions only the responder
// received that request, so no one else can answer in its place.
func Gather(ctx context.Context, nc *nats.Conn, subjects map[string]string, req any) (Gathered, error) {
	start := time.Now()
	body, err := json.Marshal(req)
	if err != nil {
		return Gathered{}, fmt.Errorf("encode request: %w", err)
	}
	inbox := nc.NewInbox()
	ch := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(inbox+".*", ch)
	if err != nil {
		return Gathered{}, rackplane.WrapError(rackplane.EUNAVAILABLE, err, "subscribe reply inbox")
	}
	defer sub.Unsubscribe()
	byReply := make(map[string]string, len(subjects))
	n := 0
	for name, subject := range subjects {
		reply := inbox + "." + strconv.Itoa(n)
		n++
		byReply[reply] = name
		if err := nc.PublishRequest(subject, reply, body); err != nil {
			return Gathered{}, rackplane.WrapError(rackplane.EUNAVAILABLE, err, "publish %s", subject)
		}
	}
	var g Gathered
	for {
		if len(byReply) == 0 {
			g.Complete = true
			g.Elapsed = time.Since(start)
			return g, nil
		}
		select {
		case <-ctx.Done():
			g.Elapsed = time.Since(start)
			return g, nil
		case m := <-ch:
			name, ok := byReply[m.Subject]
			var r Reply
			if !ok || json.Unmarshal(m.Data, &r) != nil {
				g.Dropped++
				continue
			}
			delete(byReply, m.Subject)
			r.From = name
			g.Replies = append(g.Replies, r)
		}
	}
}
