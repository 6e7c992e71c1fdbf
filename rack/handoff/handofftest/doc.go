// Package handofftest gives the boot front-ends' tests a real resolver
// over a temporary tree: a fallback root, a directory of versioned files,
// a decision table, and a recorder that checks every event against its
// schema.
package handofftest
