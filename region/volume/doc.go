// Package volume runs the external storage of machines: it checks what is
// asked, picks the rack whose provider makes a new volume (the one near
// the machine first), and sends each action over that rack's storage rpc,
// checked against the wire contract both ways. The rack's events, not the
// replies, are what the region's projection keeps; a reply only shows the
// caller the outcome before its event arrives.
package volume
