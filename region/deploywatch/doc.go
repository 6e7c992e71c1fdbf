// Package deploywatch fails deployments whose installer never reports.
// A machine that hangs in its installer, or whose preseed has no call to
// {{.URLs.Status}}, would otherwise stay "deploying" for good and keep
// PXE-booting the installer. The watch marks it failed once Timeout has
// passed since its deployment began, with a reason an operator can act on.
// Several region instances may watch at once: each failure is appended with
// the machine stream's expected version, so only one of them records it.
package deploywatch
