// Package jsonbody decodes the JSON bodies API clients send and says what
// is wrong with one in the client's terms: the field by its JSON name, the
// kind of value it wants and the kind it got ("hostname: want a string,
// got a number"), an unknown field with the fields there are, a syntax
// error with its line and column, an empty body with the shape it needs.
// encoding/json's own messages name Go types and struct fields
// (machineRequest.hostname), which mean nothing to a client.
//
// Its errors are rackplane.EINVALID and quote nothing of the body but
// field names, numbers of the wrong kind and what the parser of a field
// of its own type (an address, a CIDR, a time) says of its value: a
// string sent in a malformed body, a password, is not echoed back,
// audited or logged.
package jsonbody
