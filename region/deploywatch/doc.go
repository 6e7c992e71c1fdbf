// Package deploywatch fails deployments whose installer never reports, and
// commissionings whose agent never gives its outcome. A machine that hangs
// in its installer, or whose preseed has no call to {{.URLs.Status}}, would
// otherwise stay "deploying" for good and keep PXE-booting the installer;
// one whose ephemeral environment never boots, or whose agent cannot reach
// its rack, would stay "commissioning". The watch marks it failed once the
// operation's timeout has passed since it began, with a reason an operator
// can act on. Several region instances may watch at once: each failure is
// appended with the machine stream's expected version, so only one of them
// records it.
package deploywatch
