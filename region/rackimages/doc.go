// Package rackimages manages a rack's image store from the region, through
// the rack's images rpc (rack/images): list its versions, start and follow
// imports, delete a version, collect garbage.
//
// Every request is checked against its method's schema before it leaves,
// so a bad one is refused (EINVALID) even while the rack is away; every
// reply is checked after, as any outside input. A rack that does not answer
// is EUNAVAILABLE (saying whether it is offline or just not connected) or
// ETIMEOUT; errors the rack answers with pass through.
package rackimages
