package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// ErrBackupExists means the backup's destination already exists; nothing
// was written (a backup never replaces a file).
var ErrBackupExists = errors.New("store: backup destination exists")

// BackupReport describes a backup that was written and checked.
type BackupReport struct {
	Path       string // the backup file
	Size       int64  // its size in bytes
	Integrity  string // what PRAGMA integrity_check said of the copy: "ok"
	Builds     int    // builds in the copy
	Workers    int    // workers in the copy
	Migrations int    // migrations applied to the copy
	Schema     string // the last of them, e.g. "0006_build_list_index.sql"
}

// Backup writes a consistent snapshot of the database at dbPath to dest and
// checks it. It may run while a controller (another process) serves from the
// database: it reads through its own read-only connection, in one read
// transaction (VACUUM INTO), which in WAL mode neither blocks the
// controller's writes nor is blocked by them, and it never runs migrations
// or writes to the live files.
//
// The copy is written to a temporary file beside dest, fsynced, opened and
// checked (PRAGMA integrity_check must say "ok" and the controller's tables
// must be there), and only then given its name — never over an existing
// file — and its directory fsynced. The copy is a single self-contained
// file (rollback journal, no -wal): restoring it means copying it to the
// database path of a stopped controller. On any failure the temporary file
// is removed and dest is left as it was.
//
// It returns ErrBackupExists when dest exists; ErrNotADatabase when dbPath
// is missing, not SQLite or holds no controller data; ErrForeignDatabase for
// another program's database; ErrFull when dest's volume fills up;
// ErrTimeout when ctx ends; ErrInternal otherwise.
func Backup(ctx context.Context, dbPath, dest string) (BackupReport, error) {
	if IsPostgresURL(dbPath) {
		return BackupReport{}, fmt.Errorf("%w: %s is PostgreSQL: back it up with PostgreSQL's own tools "+
			"(pg_dump, or base backups with WAL archiving; docs/DEPLOYMENT.md)", ErrNotADatabase, RedactURL(dbPath))
	}
	if _, err := os.Lstat(dest); err == nil {
		return BackupReport{}, fmt.Errorf("%w: %s; name a new file", ErrBackupExists, dest)
	} else if !errors.Is(err, os.ErrNotExist) {
		return BackupReport{}, wrap("backup", err)
	}
	if st, err := os.Stat(dbPath); err != nil || st.Size() == 0 {
		return BackupReport{}, fmt.Errorf("%w: no database at %s (is --db right?)", ErrNotADatabase, dbPath)
	}
	if err := inspect(ctx, dbPath); err != nil {
		return BackupReport{}, err
	}
	tmp, err := backupTempName(dest)
	if err != nil {
		return BackupReport{}, wrap("backup", err)
	}
	defer os.Remove(tmp) // a no-op once published (the name is then linked or renamed away)
	if err := snapshot(ctx, dbPath, tmp); err != nil {
		return BackupReport{}, err
	}
	rep, err := checkBackup(ctx, tmp)
	if err != nil {
		return BackupReport{}, err
	}
	if err := publishBackup(tmp, dest); err != nil {
		return BackupReport{}, err
	}
	st, err := os.Stat(dest)
	if err != nil {
		return BackupReport{}, wrap("backup", err)
	}
	rep.Path, rep.Size = dest, st.Size()
	return rep, nil
}

// backupTempName is a fresh name beside dest for the copy being written.
func backupTempName(dest string) (string, error) {
	var nonce [6]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(dest), "."+filepath.Base(dest)+".tmp-"+hex.EncodeToString(nonce[:])), nil
}

// roDSN opens a database read-only, with none of dsn's settings (no journal
// mode is set, nothing is written).
func roDSN(path string) string {
	return "file:" + path + "?" + url.Values{"mode": {"ro"}, "_busy_timeout": {"5000"}}.Encode()
}

// snapshot copies the database at dbPath into the new file tmp with VACUUM
// INTO and fsyncs it (SQLite does not sync the file it vacuums into).
func snapshot(ctx context.Context, dbPath, tmp string) error {
	db, err := sql.Open("sqlite3", roDSN(dbPath))
	if err != nil {
		return wrap("backup: open", err)
	}
	defer db.Close()
	var ours int
	err = db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&ours)
	if err != nil {
		return wrapCtx(ctx, "backup: read", err)
	}
	if ours == 0 {
		return fmt.Errorf("%w: %s holds no controller data (is --db right?)", ErrNotADatabase, dbPath)
	}
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, tmp); err != nil {
		return wrapCtx(ctx, "backup: vacuum into", err)
	}
	return wrap("backup: fsync copy", fsyncPath(tmp))
}

// fsyncPath fsyncs the file or directory at p.
func fsyncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// checkBackup opens the copy read-only and checks it: integrity_check says
// "ok", and the controller's tables answer.
func checkBackup(ctx context.Context, path string) (BackupReport, error) {
	db, err := sql.Open("sqlite3", roDSN(path))
	if err != nil {
		return BackupReport{}, wrap("backup: open copy", err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `PRAGMA integrity_check`)
	if err != nil {
		return BackupReport{}, wrapCtx(ctx, "backup: integrity_check", err)
	}
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			rows.Close()
			return BackupReport{}, wrapCtx(ctx, "backup: integrity_check", err)
		}
		problems = append(problems, line)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return BackupReport{}, wrapCtx(ctx, "backup: integrity_check", err)
	}
	if len(problems) != 1 || problems[0] != "ok" {
		return BackupReport{}, fmt.Errorf("%w: the copy fails integrity_check: %s", ErrInternal, strings.Join(problems, "; "))
	}
	rep := BackupReport{Integrity: "ok"}
	err = db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM builds), (SELECT COUNT(*) FROM workers),
		(SELECT COUNT(*) FROM schema_migrations), (SELECT COALESCE(MAX(name), '') FROM schema_migrations)`).
		Scan(&rep.Builds, &rep.Workers, &rep.Migrations, &rep.Schema)
	if err != nil {
		return BackupReport{}, wrapCtx(ctx, "backup: read copy", err)
	}
	return rep, nil
}

// publishBackup gives the checked copy its name without ever replacing a
// file: a hard link fails if dest appeared meanwhile. Where the file system
// has no hard links, a rename after a last check. Then the directory is
// fsynced, so the name survives a power loss.
func publishBackup(tmp, dest string) error {
	err := os.Link(tmp, dest)
	switch {
	case errors.Is(err, os.ErrExist):
		return fmt.Errorf("%w: %s appeared while the backup was written; name a new file", ErrBackupExists, dest)
	case err != nil:
		if _, serr := os.Lstat(dest); serr == nil {
			return fmt.Errorf("%w: %s appeared while the backup was written; name a new file", ErrBackupExists, dest)
		}
		if err := os.Rename(tmp, dest); err != nil {
			return wrap("backup: name the copy", err)
		}
	default:
		if err := os.Remove(tmp); err != nil {
			return wrap("backup: remove the temporary name", err)
		}
	}
	return wrap("backup: fsync directory", fsyncPath(filepath.Dir(dest)))
}
