// Package webui is the operator's web UI that regiond serves beside its
// API: one embedded page of plain HTML, CSS and JavaScript, with no build
// step and nothing loaded from the network, so it works wherever regiond
// runs, offline sites included.
//
// The page is a client of the public API and nothing else: it holds no
// state on the server and gets no privilege the API does not give to the
// bearer token the operator typed (or passed in the URL fragment, which
// never reaches the server). It is served without a token, since a browser
// has none before the page asks for it; every byte of data it shows comes
// through the API with that token.
//
// Data shown on the page comes from racks and operators, so the script
// puts it into the DOM as text only, and the responses carry a strict
// Content-Security-Policy (scripts and styles from this origin, no inline
// code) so that a slip there still runs nothing.
package webui
