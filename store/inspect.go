package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"

	"github.com/mattn/go-sqlite3"
)

var (
	// ErrNotADatabase means the database path names a file that is not a
	// SQLite database (or is encrypted or damaged beyond its header). It was
	// not changed.
	ErrNotADatabase = errors.New("store: not a SQLite database")
	// ErrForeignDatabase means the database path names a SQLite database
	// that this controller did not create (the older TypeScript
	// controller's, or another program's). It was not changed.
	ErrForeignDatabase = errors.New("store: a database this controller did not create")
)

// inspect looks at an existing database file before Open changes anything
// in it (the journal mode, the migrations table): a file that is not
// SQLite, or a SQLite database with tables but none of this controller's
// migrations, is refused untouched. A missing or empty file is fine.
func inspect(ctx context.Context, path string) error {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) || (err == nil && st.Size() == 0) {
		return nil
	}
	if err != nil {
		return wrap("inspect", err)
	}
	if st.IsDir() {
		return fmt.Errorf("%w: %s is a directory; name a file", ErrNotADatabase, path)
	}
	// Read-only and without the connection settings of dsn: nothing written.
	db, err := sql.Open("sqlite3", "file:"+path+"?"+url.Values{"mode": {"ro"}}.Encode())
	if err != nil {
		return wrap("inspect", err)
	}
	defer db.Close()
	var tables, ours, typescript int
	err = db.QueryRowContext(ctx, `SELECT
		COUNT(*),
		COUNT(*) FILTER (WHERE name = 'schema_migrations'),
		COUNT(*) FILTER (WHERE name IN ('builds', 'workers'))
		FROM sqlite_master WHERE type = 'table'`).Scan(&tables, &ours, &typescript)
	var se sqlite3.Error
	if errors.As(err, &se) && se.Code == sqlite3.ErrNotADB {
		return fmt.Errorf("%w: %s is not a SQLite database; point --db at a new file", ErrNotADatabase, path)
	}
	if err != nil {
		return wrap("inspect", err)
	}
	switch {
	case ours > 0 || tables == 0:
		return nil
	case typescript == 2:
		return fmt.Errorf("%w: %s was written by the older TypeScript controller; it was left untouched: "+
			"start with a new --db path (docs/MIGRATION.md)", ErrForeignDatabase, path)
	default:
		return fmt.Errorf("%w: %s holds another program's tables; it was left untouched: point --db at a new file",
			ErrForeignDatabase, path)
	}
}
