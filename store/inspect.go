package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

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
	// ErrUnwritable means the database's directory cannot be created or
	// written, or its file cannot be opened for writing (permissions, a
	// read-only file system, a path through a file). Nothing was changed.
	ErrUnwritable = errors.New("store: database location not writable")
	// ErrBadURL means a PostgreSQL URL's setting of this controller (such as
	// pool_max_conns) is invalid; nothing was opened.
	ErrBadURL = errors.New("store: invalid database URL")
)

// openError is a failure of Open told as one plain sentence that names the
// database file, fit to be printed as it is at start-up; errors.Is matches
// its kind (ErrNotADatabase, ErrForeignDatabase, ErrUnwritable, ErrInternal
// or ErrTimeout).
type openError struct {
	kind error
	msg  string
}

func (e *openError) Error() string        { return e.msg }
func (e *openError) Is(target error) bool { return target == e.kind }

// openFailed is an openError for a failure of SQLite or of the migrations:
// what went wrong, then the cause without the store's own prefix.
func openFailed(ctx context.Context, what string, err error) error {
	kind := ErrInternal
	if ctx.Err() != nil || errors.Is(err, ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		kind = ErrTimeout
	}
	cause := err.Error()
	for _, prefix := range []error{ErrInternal, ErrTimeout} {
		cause = strings.TrimPrefix(cause, prefix.Error()+": ")
	}
	return &openError{kind, what + ": " + cause}
}

// why is the reason a file operation failed, without the operation and the
// path ("permission denied", "read-only file system").
func why(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// sqliteMagic opens every SQLite 3 database file.
const sqliteMagic = "SQLite format 3\x00"

// hasSQLiteHeader reports whether the file at path begins with sqliteMagic.
func hasSQLiteHeader(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	head := make([]byte, len(sqliteMagic))
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return false, err
	}
	return string(head[:n]) == sqliteMagic, nil
}

func notADatabase(path string) error {
	return &openError{ErrNotADatabase, fmt.Sprintf("%s is not a SQLite database; it was left untouched: point --db at a new file", path)}
}

// PrepareDir creates the directory of the database file path and checks, by
// creating and removing a file there, that SQLite can create its -wal and
// -shm files in it, and that an existing database file opens for writing.
// Open calls it first; the command calls it before it saves a generated key
// there. It returns ErrUnwritable. (SQLite's own error for an unwritable directory is
// "unable to open database file: no such file or directory".)
func PrepareDir(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return &openError{ErrUnwritable, fmt.Sprintf("cannot create the database directory %s: %s "+
			"(create it writable for the controller's user, or choose another --db)", dir, why(err))}
	}
	probe, err := os.CreateTemp(dir, ".controller-write-check-*")
	if err != nil {
		return &openError{ErrUnwritable, fmt.Sprintf("cannot write in the database directory %s: %s "+
			"(the controller creates %s and its -wal and -shm files there: make the directory writable for "+
			"the controller's user, or choose another --db)", dir, why(err), filepath.Base(path))}
	}
	probe.Close()
	os.Remove(probe.Name())
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		if st, serr := os.Stat(path); serr == nil && st.IsDir() {
			return nil // inspect says what is wrong
		}
		return &openError{ErrUnwritable, fmt.Sprintf("cannot open the database %s for writing: %s "+
			"(make it writable for the controller's user)", path, why(err))}
	}
	return f.Close()
}

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
		return openFailed(ctx, "cannot read the database "+path, err)
	}
	if st.IsDir() {
		return &openError{ErrNotADatabase, fmt.Sprintf("%s is a directory, not a database file: point --db at a file", path)}
	}
	// SQLite itself takes a file shorter than its 100-byte header for an
	// empty database and overwrites it: look at the magic string first.
	if isDB, err := hasSQLiteHeader(path); err != nil {
		return openFailed(ctx, "cannot read the database "+path, err)
	} else if !isDB {
		return notADatabase(path)
	}
	// Read-only and without the connection settings of dsn: nothing written.
	db, err := sql.Open("sqlite3", "file:"+path+"?"+url.Values{"mode": {"ro"}}.Encode())
	if err != nil {
		return openFailed(ctx, "cannot read the database "+path, err)
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
		return notADatabase(path)
	}
	if err != nil {
		return openFailed(ctx, "cannot read the database "+path, err)
	}
	switch {
	case ours > 0 || tables == 0:
		return nil
	case typescript == 2:
		return &openError{ErrForeignDatabase, fmt.Sprintf("%s was written by the older TypeScript controller; "+
			"it was left untouched: start with a new --db path (docs/MIGRATION.md)", path)}
	default:
		return &openError{ErrForeignDatabase, fmt.Sprintf("%s holds another program's tables; it was left untouched: "+
			"point --db at a new file", path)}
	}
}
