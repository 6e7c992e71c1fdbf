// Package preseedcache keeps, on the rack, the rendered preseed of each
// machine being deployed, so that an installer still gets its preseed while
// the region is away.
//
// The rack fetches a machine's preseed as soon as it learns of the
// machine's install boot decision (Prefetcher), not when the installer
// first asks: a region outage right after a deploy is then covered too. A
// deployment is known by its machine, preseed URL and image version
// (DecisionKey); a decision re-emitted with another hostname or kernel
// parameters keeps the cached copy (and fetches it again).
// The rack's HTTP server asks the region first on every fetch and serves
// the cached copy only when the region does not answer; every answer of the
// region refreshes the copy. A changed install decision (a new deployment),
// a decision that is no longer an install (released, deployed, deleted) or
// one the region cleared drops the machine's entry, and the store is
// bounded in entries and bytes, the oldest entries going first.
//
// Preseeds hold secrets: root password hashes, licence keys and the token
// the installer reports its outcome with. Each entry is sealed with
// AES-256-GCM under a key file (KeyFile, created 0600 on first use) in the
// rack's data directory, with the machine id as additional data. This
// protects a copied cache file or a backup of the cache directory taken
// without the key file: it cannot be read, and an altered, truncated or
// swapped entry (another machine's file under this machine's name) is
// refused rather than served. It does not protect against root on the
// rack, or anyone who can read the key file: they can decrypt every entry,
// as the rack itself must be able to.
//
// With each preseed the region gives the SHA-256 of the install status
// token in it: while the region is away the rack keeps an installer's
// report only when its token matches (Preseed.TokenMatches). Other rack
// data holding secrets is sealed with the same key (Store.Seal).
//
// The Prefetcher's hooks run on the path serving boot configs: they touch
// no disk, and its Run loop does the store's writes and deletions.
package preseedcache
