// Package httpboot serves boot files over HTTP (iPXE after a TFTP boot
// loader, UEFI HTTP boot) through the same hand-off as TFTP, with Range
// requests, ETag and Content-Length.
//
// Files, whole or one range of them, go out from the *os.File itself
// through a LimitedReader, so Linux sends them with sendfile(2) and they
// never pass through user space (http.ServeContent copies a range through
// an io.SectionReader). Plain GETs and HEADs are answered on the
// connection itself, without net/http's per-request machinery (Fast, an
// httpserver.FastHandler); conditional requests, several ranges and
// anything unusual go to Handler, which answers with http.ServeContent.
// BenchmarkBootHTTPVsNginx measures the rack's boot HTTP beside nginx.
package httpboot
