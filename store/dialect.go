package store

import (
	"context"
	"database/sql"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// The store's statements are written once, in the SQL that SQLite and
// PostgreSQL share, with three spellings that differ translated on their way
// to the driver (dialect.text, cached per statement):
//
//   - placeholders are written ?, and become $1, $2 ... on PostgreSQL;
//   - the two-argument GREATEST(a, b) and LEAST(a, b) become SQLite's scalar
//     MAX(a, b) and MIN(a, b);
//   - SQLite's query-planner hint INDEXED BY <index> is dropped on PostgreSQL.
//
// What cannot be spelled the same (the case-insensitive app-name match, the
// migrations, the durability machinery, backups) asks Store.pg.

// dialect translates statements for one engine.
type dialect struct {
	postgres bool
	cache    sync.Map // statement as written -> as sent
}

var (
	indexedBy = regexp.MustCompile(`(?i)\s+INDEXED\s+BY\s+\w+`)
	greatest  = regexp.MustCompile(`\bGREATEST\(`)
	least     = regexp.MustCompile(`\bLEAST\(`)
)

// text returns query as this engine must receive it.
func (d *dialect) text(query string) string {
	if !d.postgres && !strings.Contains(query, "GREATEST(") && !strings.Contains(query, "LEAST(") {
		return query // SQLite's hot path: nothing to translate, no lookup
	}
	if v, ok := d.cache.Load(query); ok {
		return v.(string)
	}
	out := d.translate(query)
	d.cache.Store(query, out)
	return out
}

func (d *dialect) translate(query string) string {
	if !d.postgres {
		query = greatest.ReplaceAllString(query, "MAX(")
		return least.ReplaceAllString(query, "MIN(")
	}
	query = indexedBy.ReplaceAllString(query, "")
	var b strings.Builder
	b.Grow(len(query) + 16)
	n, quoted := 0, false
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'':
			quoted = !quoted // '' inside a literal toggles twice
			b.WriteByte(c)
		case c == '?' && !quoted:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// pool is a connection pool whose statements are translated.
type pool struct {
	*sql.DB
	d *dialect
}

func (p *pool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return p.DB.ExecContext(ctx, p.d.text(query), args...)
}

func (p *pool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return p.DB.QueryContext(ctx, p.d.text(query), args...)
}

func (p *pool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return p.DB.QueryRowContext(ctx, p.d.text(query), args...)
}

func (p *pool) BeginTx(ctx context.Context, opts *sql.TxOptions) (*Tx, error) {
	tx, err := p.DB.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &Tx{Tx: tx, d: p.d}, nil
}

// Tx is a transaction whose statements are translated for its engine.
type Tx struct {
	*sql.Tx
	d *dialect
}

func (t *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.Tx.ExecContext(ctx, t.d.text(query), args...)
}

func (t *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.Tx.QueryContext(ctx, t.d.text(query), args...)
}

func (t *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return t.Tx.QueryRowContext(ctx, t.d.text(query), args...)
}

func (t *Tx) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return t.Tx.PrepareContext(ctx, t.d.text(query))
}

// postgres reports whether the transaction runs on PostgreSQL.
func (t *Tx) postgres() bool { return t.d.postgres }
