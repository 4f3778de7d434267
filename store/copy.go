package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// ErrNotEmpty means the destination of a Copy already holds workers or
// builds; nothing was copied.
var ErrNotEmpty = errors.New("store: destination database is not empty")

// ErrSchemaMismatch means the two databases of a Copy are not at the same
// schema version; nothing was copied.
var ErrSchemaMismatch = errors.New("store: databases at different schema versions")

// copyTables are the tables Copy moves, parents before children. The
// counters kept by triggers (build_counts, history_totals) are not copied:
// the destination's own triggers count the rows as they arrive.
// schema_migrations is the destination's own.
var copyTables = []struct {
	name, order string
	identity    string // a generated id column whose sequence follows the copied ids (PostgreSQL)
}{
	{name: "workers", order: "id"},
	{name: "builds", order: "submitted_at, id"},
	{name: "build_logs", order: "build_id, seq"},
	{name: "diagnostics", order: "rowid"}, // the order of reports made in the same millisecond
	{name: "cpu_snapshots", order: "id", identity: "id"},
	{name: "worker_tokens", order: "digest"},
	{name: "assignment_tokens", order: "digest"},
	{name: "webhook_endpoints", order: "url"},
	{name: "outbox", order: "id", identity: "id"},
}

// copyBatch is how many rows one destination transaction writes.
const copyBatch = 2000

// CopyReport counts the rows Copy moved, by table.
type CopyReport struct {
	Tables []string
	Rows   map[string]int64
}

// Copy moves every row of the controller's tables from src to dst — SQLite
// to PostgreSQL, or back — for an installation changing its database
// (docs/MIGRATION.md). Both must be at the same schema version and dst must
// hold no worker and no build; src should not be written meanwhile (stop
// the controller). Rows go in batches of copyBatch, each one transaction;
// progress lines go to out. A failed copy leaves dst partly written: empty
// it (a new database) before trying again.
func Copy(ctx context.Context, src, dst *Store, out io.Writer) (CopyReport, error) {
	rep := CopyReport{Rows: map[string]int64{}}
	a, err := src.Migrations(ctx)
	if err != nil {
		return rep, err
	}
	b, err := dst.Migrations(ctx)
	if err != nil {
		return rep, err
	}
	if !slices.Equal(a, b) {
		return rep, fmt.Errorf("%w: the source has %d migrations, the destination %d: run this version of the controller once on each",
			ErrSchemaMismatch, len(a), len(b))
	}
	var n int64
	err = dst.read.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM workers) + (SELECT COUNT(*) FROM builds)`).Scan(&n)
	if err != nil {
		return rep, wrap("copy", err)
	}
	if n > 0 {
		return rep, fmt.Errorf("%w: it holds %d workers and builds; copy into a new database", ErrNotEmpty, n)
	}
	for _, t := range copyTables {
		rows, err := copyTable(ctx, src, dst, t.name, t.order, out)
		rep.Tables = append(rep.Tables, t.name)
		rep.Rows[t.name] = rows
		if err != nil {
			return rep, fmt.Errorf("copy %s: %w", t.name, err)
		}
		if t.identity != "" && dst.pg {
			// Later rows get ids after the copied ones.
			if _, err := dst.write.ExecContext(ctx, fmt.Sprintf(`SELECT setval(pg_get_serial_sequence('%s', '%s'),
				GREATEST((SELECT MAX(%s) FROM %s), 0) + 1, false)`, t.name, t.identity, t.identity, t.name)); err != nil {
				return rep, wrap("copy "+t.name, err)
			}
		}
	}
	return rep, nil
}

// copyTable copies one table in key order, copyBatch rows per destination
// transaction, reading the source in pages after the last key copied.
func copyTable(ctx context.Context, src, dst *Store, table, order string, out io.Writer) (int64, error) {
	cols, err := copyColumns(ctx, src, table)
	if err != nil {
		return 0, err
	}
	keys := strings.Split(order, ", ")
	keyAt := make([]int, len(keys))
	for i, k := range keys {
		keyAt[i] = slices.Index(cols, k)
		if keyAt[i] < 0 { // diagnostics' rowid is read, never written
			cols = append(cols, k)
			keyAt[i] = len(cols) - 1
		}
	}
	written := cols
	if i := slices.Index(cols, "rowid"); i >= 0 {
		written = slices.Delete(slices.Clone(cols), i, i+1) // the destination numbers them again, in order
	}
	insert := `INSERT INTO ` + table + ` (` + strings.Join(written, ", ") + `) VALUES (?` +
		strings.Repeat(", ?", len(written)-1) + `)`
	var (
		total int64
		after []any // the last key copied
	)
	for {
		q := `SELECT ` + strings.Join(cols, ", ") + ` FROM ` + table
		if after != nil {
			q += ` WHERE (` + order + `) > (?` + strings.Repeat(", ?", len(keys)-1) + `)`
		}
		q += ` ORDER BY ` + order + fmt.Sprintf(` LIMIT %d`, copyBatch)
		batch, err := readRows(ctx, src, q, len(cols), after)
		if err != nil {
			return total, err
		}
		if len(batch) == 0 {
			return total, nil
		}
		err = dst.write.copyInsert(ctx, insert, batch, func(row []any) []any {
			if len(written) == len(cols) {
				return row
			}
			return slices.Delete(slices.Clone(row), slices.Index(cols, "rowid"), slices.Index(cols, "rowid")+1)
		})
		if err != nil {
			return total, err
		}
		dst.committed.Add(1)
		if err := dst.Sync(); err != nil { // SQLite: durable before it counts as copied
			return total, err
		}
		total += int64(len(batch))
		last := batch[len(batch)-1]
		after = make([]any, len(keys))
		for i, at := range keyAt {
			after[i] = last[at]
		}
		fmt.Fprintf(out, "%s: %d rows\n", table, total)
	}
}

// copyColumns lists a table's columns as the source has them.
func copyColumns(ctx context.Context, s *Store, table string) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT * FROM `+table+` LIMIT 0`)
	if err != nil {
		return nil, wrap("columns of "+table, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	return cols, wrap("columns of "+table, err)
}

func readRows(ctx context.Context, s *Store, q string, n int, args []any) ([][]any, error) {
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, wrap("read", err)
	}
	defer rows.Close()
	var out [][]any
	for rows.Next() {
		vals := make([]any, n)
		ptrs := make([]any, n)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, wrap("read", err)
		}
		out = append(out, vals)
	}
	return out, wrap("read", rows.Err())
}

// copyInsert writes rows with one prepared statement in one transaction.
func (p *pool) copyInsert(ctx context.Context, insert string, rows [][]any, values func([]any) []any) error {
	tx, err := p.BeginTx(ctx, nil)
	if err != nil {
		return wrap("write", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	stmt, err := tx.PrepareContext(ctx, insert)
	if err != nil {
		return wrap("write", err)
	}
	defer stmt.Close()
	for _, r := range rows {
		if _, err := stmt.ExecContext(ctx, values(r)...); err != nil {
			return wrap("write", err)
		}
	}
	return wrap("write", tx.Commit())
}
