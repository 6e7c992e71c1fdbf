// Package httpserver runs the HTTP servers of the region (the API) and of
// the rack (boot files, preseeds, installer reports, metrics) within
// bounds nobody on the network can lift:
//
//   - time: headers within ReadHeaderTimeout, the whole request within
//     ReadTimeout, a keep-alive connection idle at most IdleTimeout, and
//     a response write that waits on a client not reading cut off after
//     WriteTimeout. The write bound is per piece written, not per
//     response: a kernel or disk image that keeps moving is never cut off
//     however long it takes, and a handler that waits (a long poll, a
//     storage action) is bounded by its own timeout, not by this one.
//   - size: headers at most MaxHeaderBytes, a request body at most
//     MaxBodyBytes (handlers may take less).
//   - connections: at most MaxConns open. When full, a new connection
//     closes the connection that has been idle longest (between requests,
//     or not yet through its headers) rather than waiting: a flood of idle
//     connections sheds itself, oldest first, and a new client still gets
//     an answer. Only when every connection is inside a handler is a new
//     one refused, with a 503. Running out of file descriptors (EMFILE)
//     sheds idle connections the same way; with none to shed, accepting
//     backs off (net/http's retry, up to a second) rather than spinning.
//   - text: a path or query that holds a NUL or bytes that are not UTF-8
//     is answered 400 with a JSON error before any handler sees it, since
//     no handler can store or look up such text (PostgreSQL refuses it).
//
// Every server counts its connections (open, accepted, shed with why,
// refused) and the requests it refused, labelled with its name.
//
// A server may have a FastHandler (the rack's boot files): it then reads
// each connection's request heads itself, and answers a plain GET or HEAD
// the FastHandler takes on the connection, the head leaving with the body
// (in one write, or with MSG_MORE ahead of sendfile(2) for a file), within
// the same bounds (header and idle timeouts, the write timeout per piece,
// the connection limit and its shedding). net/http costs a goroutine and a connection-watching read,
// timers and header maps on every request, twice what a static file
// server spends on a small range. The first request the FastHandler does
// not take goes, with the rest of the connection, to net/http and the
// server's handler, which answer as they would have.
package httpserver
