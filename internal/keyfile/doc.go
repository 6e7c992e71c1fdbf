// Package keyfile keeps a random secret key in a file of a component's
// data directory: created on first use (mode 0600, never replacing one
// that appeared meanwhile), read as it is afterwards. The rack's sealed
// preseed cache and its machine credentials each keep one.
package keyfile
