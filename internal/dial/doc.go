// Package dial opens the connections the binaries hand to Rackplane's
// components, with the retry behaviour each needs. Only main packages use
// it: libraries are given connections, they never dial.
package dial
