// Package rackplane holds what every part of Rackplane shares: the error
// type with its codes. Region, rack and the CLI live in subpackages; this
// package imports none of them, so any of them may import it.
package rackplane
