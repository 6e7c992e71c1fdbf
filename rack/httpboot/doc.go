// Package httpboot serves boot files over HTTP (iPXE after a TFTP boot
// loader, UEFI HTTP boot) through the same hand-off as TFTP, with Range
// requests, ETag and Content-Length. Files go out through
// http.ServeContent on the *os.File itself, so Linux sends them with
// sendfile(2) and they never pass through user space.
package httpboot
