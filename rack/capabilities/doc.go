// Package capabilities builds a rack's capability snapshot — the operating
// systems, releases, architectures and image versions it can boot, its
// bootloaders and its storage providers — publishes it at start and
// whenever it changes, and answers the live capabilities and licence key
// validation rpcs. The rack is the source of truth for what it can do; the
// region only keeps the latest snapshot of each rack.
//
// Which releases exist follows from the images the rack has. What a release
// is called, whether it is the default, whether it needs a licence key and
// how such a key looks come from the Catalog, which knows common operating
// systems and can be extended per rack.
package capabilities
