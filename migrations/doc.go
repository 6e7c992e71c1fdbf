// Package migrations embeds the SQL migrations of the region's database and
// applies them at start. Files are named NNNN_what.sql and applied in name
// order, each in its own transaction, under an advisory lock so two regions
// starting at once do not race. An applied file must never change: a
// checksum mismatch stops the start with an error.
package migrations
