// Package httpboot serves boot files over HTTP (iPXE after a TFTP boot
// loader, UEFI HTTP boot) through the same hand-off as TFTP, with Range
// requests, ETag and Content-Length.
//
// Files, whole or one range of them, go out with sendfile(2) and never
// pass through user space (http.ServeContent copies a range through an
// io.SectionReader). Plain GETs and HEADs are answered on the connection
// itself, without net/http's per-request machinery (Fast, an
// httpserver.FastHandler): the head leaves with the file's first pages
// (MSG_MORE), and the file is sent at an offset from a descriptor the
// image store keeps open across requests (handoff.Request.Shared), so a
// request costs no open, fstat, lseek or close. Conditional requests,
// several ranges and anything unusual go to Handler, which answers with
// http.ServeContent.
// BenchmarkBootHTTPVsNginx measures the rack's boot HTTP beside nginx.
package httpboot
