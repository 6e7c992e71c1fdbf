package postgres

import (
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
)

// key is id as a uuid-typed query parameter, so that a lookup by key
// compares uuids and its index serves it (a comparison of the column
// cast to text reads every row). Only the canonical form, which is what
// the column reads back as, is a key: anything else is not valid, a
// NULL that matches no row, as its text never matched one.
func key(id string) pgtype.UUID {
	u, err := uuid.Parse(id)
	if err != nil || len(id) != 36 || u.String() != id {
		return pgtype.UUID{}
	}
	return pgtype.UUID{Bytes: u, Valid: true}
}

// keys is ids as a uuid[] parameter; ids that are no key are left out
// (they match nothing).
func keys(ids []string) []uuid.UUID {
	out := make([]uuid.UUID, 0, len(ids))
	for _, id := range ids {
		if k := key(id); k.Valid {
			out = append(out, k.Bytes)
		}
	}
	return out
}
