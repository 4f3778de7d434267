// Package store owns the controller's SQLite database: the schema (embedded
// migrations), the record types, and every SQL statement. One public method is
// one transaction, every call runs under a deadline, and driver errors never
// leave the package: callers see ErrNotFound, ErrWorkerNotFound, ErrConflict,
// ErrNotAssignee, ErrRetryLimit, ErrPurged, ErrTimeout, ErrFull or ErrInternal.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/expo-free-agent/controller/store/fsync"
	"github.com/expo-free-agent/controller/store/volume"
	sqlite3 "github.com/mattn/go-sqlite3"
)

//go:embed migrations/*.sql migrations/postgres/*.sql
var migrationFiles embed.FS

// DefaultOpTimeout bounds every store operation (the "transaction timeout").
const DefaultOpTimeout = 5 * time.Second

// DefaultMigrateTimeout bounds the migrations applied at open, together. They
// run before anything is served, so nothing waits behind them, but an index
// created on a history of a million builds reads the whole table: seconds,
// more than DefaultOpTimeout (docs/DEVELOPMENT.md, Adding a migration).
const DefaultMigrateTimeout = 10 * time.Minute

var (
	// ErrNotFound means the addressed build (or report) does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrWorkerNotFound means the addressed worker does not exist.
	ErrWorkerNotFound = errors.New("store: worker not found")
	// ErrConflict means the record is not in a state that allows the change.
	ErrConflict = errors.New("store: conflicting state")
	// ErrNotAssignee means the worker is not the build's current assignee.
	ErrNotAssignee = errors.New("store: worker is not the current assignee")
	// ErrLocked means another node's transaction holds the build being
	// assigned (PostgreSQL, FOR UPDATE SKIP LOCKED): it is probably being
	// handed to another worker; try the next build.
	ErrLocked = errors.New("store: build locked by another node")
	// ErrRetryLimit means a retry's chain already holds NewBuild.MaxChain
	// retries; nothing was written.
	ErrRetryLimit = errors.New("store: retry limit reached")
	// ErrPurged means retention took the build's files: a retry of it is
	// refused (docs/API.md §2.8, 410).
	ErrPurged = errors.New("store: build files purged")
	// ErrBadToken means a presented token is unknown, expired, revoked, or
	// not of the addressed build's current assignment.
	ErrBadToken = errors.New("store: invalid or expired token")
	// ErrOTPInvalid means no unused one-time password of the build's
	// current assignment matches.
	ErrOTPInvalid = errors.New("store: invalid one-time password")
	// ErrOTPExpired means the one-time password matches but has expired.
	ErrOTPExpired = errors.New("store: one-time password expired")
	// ErrTimeout means the operation did not finish within its deadline or
	// its context was cancelled. (SQLite's busy wait for a lock held by
	// another process — a backup, the sqlite3 shell — is bounded by the busy
	// timeout, 5 s, not by the context.)
	ErrTimeout = errors.New("store: operation timed out")
	// ErrFull means the database's volume has no space left (SQLite's
	// SQLITE_FULL, or ENOSPC from the WAL's fsync). The transaction was rolled
	// back (or, when only the fsync failed, committed but not known to be
	// durable); the store keeps working and writes succeed again once space
	// is freed. Its text is for logs only.
	ErrFull = errors.New("store: database volume full")
	// ErrInternal wraps every other database failure. Its text is for logs only.
	ErrInternal = errors.New("store: internal error")
)

// Store is the SQLite database. Writes go through a single connection so that
// write transactions are serialized in-process (no SQLITE_BUSY between our own
// writers); reads use a small pool of read-only connections and never block
// writes (WAL).
type Store struct {
	write     *pool
	read      *pool
	pg        bool   // PostgreSQL (postgres.go); else SQLite
	node      string // this process's id in shared notifications (PostgreSQL)
	dsn       string // the PostgreSQL URL (the Listener's own connection)
	channel   string // the LISTEN/NOTIFY channel of this schema (notify.go)
	opTimeout time.Duration
	migrateTO time.Duration
	wal       *walFile
	durable   *fsync.Group  // makes commits durable (group commit of the WAL fsync)
	committed atomic.Uint64 // commits so far
	synced    atomic.Uint64 // every commit up to this one is durable
	guard     *fileGuard    // nil until the file exists
	feed      feed          // live subscribers to builds' changes
	appender  logAppender   // AppendLogs calls waiting for a batch transaction
}

// Option configures Open.
type Option func(*Store)

// WithOpTimeout sets the deadline applied to every operation.
func WithOpTimeout(d time.Duration) Option { return func(s *Store) { s.opTimeout = d } }

// WithMigrateTimeout sets the deadline of the migrations applied at open.
func WithMigrateTimeout(d time.Duration) Option { return func(s *Store) { s.migrateTO = d } }

// dsn builds the connection string. Per-connection settings live here so that
// every pooled connection gets them:
//   - WAL lets readers run beside the single writer;
//   - synchronous=NORMAL writes commits to the WAL without an fsync; every
//     write method then waits for a group fsync of the WAL (Store.tx), so an
//     acknowledged change survives power loss, not only a process crash, while
//     concurrent commits share one fsync (ARCHITECTURE.md, Guarantees);
//   - the busy timeout covers other processes (a backup, the sqlite3 shell);
//   - foreign keys are enforced; write transactions start IMMEDIATE;
//   - each connection caches its prepared statements (the store runs a fixed
//     set of ~50 queries; preparing them was 8% of the CPU under load).
func dsn(path string, readOnly bool) string {
	v := url.Values{}
	v.Set("_journal_mode", "WAL")
	v.Set("_synchronous", "NORMAL")
	v.Set("_busy_timeout", "5000")
	v.Set("_fk", "1")
	v.Set("_stmt_cache_size", "96") // the driver keeps prepared statements per connection
	if readOnly {
		v.Set("_query_only", "1")
	} else {
		v.Set("_txlock", "immediate")
	}
	return "file:" + path + "?" + v.Encode()
}

// Open opens (creating if needed) the database at path, creates its directory,
// and applies pending migrations. Its errors are plain sentences that name
// the file: ErrUnwritable, ErrNotADatabase or ErrForeignDatabase (nothing
// was changed), ErrInternal or ErrTimeout.
//
// A path that is a postgres:// or postgresql:// URL opens PostgreSQL instead
// (postgres.go).
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	if IsPostgresURL(path) {
		return openPostgres(ctx, path, opts...)
	}
	if err := PrepareDir(path); err != nil {
		return nil, err
	}
	if err := inspect(ctx, path); err != nil {
		return nil, err
	}
	s := &Store{opTimeout: DefaultOpTimeout, migrateTO: DefaultMigrateTimeout, wal: &walFile{path: path + "-wal"}}
	s.durable = fsync.NewGroup(s.wal.Sync)
	for _, o := range opts {
		o(s)
	}
	cannotOpen := "cannot open the database " + path
	w, err := sql.Open("sqlite3", dsn(path, false))
	if err != nil {
		return nil, openFailed(ctx, cannotOpen, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	s.write = &pool{w, &dialect{}}
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		w.Close()
		return nil, openFailed(ctx, cannotOpen, err)
	}
	if mode != "wal" {
		w.Close()
		return nil, &openError{ErrInternal, fmt.Sprintf("the database %s must be in WAL mode (it is %q); "+
			"is it on a local file system?", path, mode)}
	}
	if s.guard, err = newFileGuard(path); err != nil {
		w.Close()
		return nil, openFailed(ctx, cannotOpen, err)
	}
	if err := s.migrate(ctx); err != nil {
		w.Close()
		return nil, openFailed(ctx, "cannot bring the database "+path+" to this version's schema", err)
	}
	r, err := sql.Open("sqlite3", dsn(path, true))
	if err != nil {
		w.Close()
		return nil, openFailed(ctx, cannotOpen, err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	s.read = &pool{r, s.write.d}
	return s, nil
}

// Close closes both connection pools.
func (s *Store) Close() error {
	err1 := s.read.Close()
	err2 := s.write.Close()
	var err3 error
	if s.wal != nil {
		err3 = s.wal.Close()
	}
	if err := errors.Join(err1, err2, err3); err != nil {
		return wrap("close", err)
	}
	return nil
}

func (s *Store) migrate(ctx context.Context) error {
	ctx, cancel := s.opContextWithin(ctx, s.migrateTO)
	defer cancel()
	dir := "migrations"
	if s.pg {
		dir = "migrations/postgres"
	}
	if _, err := s.write.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		return wrap("migrate", err)
	}
	names, err := fs.Glob(migrationFiles, dir+"/*.sql")
	if err != nil {
		return wrap("migrate", err)
	}
	sort.Strings(names)
	for _, name := range names {
		base := strings.TrimPrefix(name, dir+"/")
		body, err := migrationFiles.ReadFile(name)
		if err != nil {
			return wrap("migrate", err)
		}
		err = s.tx(ctx, "migrate "+base, func(tx *Tx) error {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE name = ?`, base).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			// As written: a migration is one engine's own SQL (and its
			// comments may hold a ? or an apostrophe).
			if _, err := tx.Tx.ExecContext(ctx, string(body)); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)`,
				base, time.Now().UnixMilli())
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Migrations lists the applied migrations in order.
func (s *Store) Migrations(ctx context.Context) ([]string, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	rows, err := s.read.QueryContext(ctx, `SELECT name FROM schema_migrations ORDER BY name`)
	if err != nil {
		return nil, wrap("migrations", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, wrap("migrations", err)
		}
		out = append(out, n)
	}
	return out, wrap("migrations", rows.Err())
}

// opContext bounds an operation by the store's deadline. When the database
// files cannot be used safely (fileGuard), the context comes back already
// cancelled with that cause, so the operation fails before SQLite touches
// the files.
func (s *Store) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return s.opContextWithin(ctx, s.opTimeout)
}

// opContextWithin is opContext with deadline d.
func (s *Store) opContextWithin(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(withChanges(ctx), d)
	if s.guard == nil {
		return ctx, cancel
	}
	if err := s.guard.usable(); err != nil {
		refused, refuse := context.WithCancelCause(ctx)
		refuse(err)
		return refused, cancel
	}
	return ctx, cancel
}

// tx runs fn in one write transaction. A typed store error returned by fn is
// passed through unchanged; anything else becomes ErrInternal or ErrTimeout.
func (s *Store) tx(ctx context.Context, op string, fn func(*Tx) error) error {
	return s.txAt(ctx, op, sql.LevelSerializable, fn)
}

// txAt is tx at an isolation level of PostgreSQL's (SQLite's write
// transactions are always serializable: one writer). Only a transaction
// that takes row locks for everything it decides on may run below
// serializable (AssignNext).
func (s *Store) txAt(ctx context.Context, op string, level sql.IsolationLevel, fn func(*Tx) error) error {
	if s.pg {
		return s.pgTx(ctx, op, level, fn)
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return wrapCtx(ctx, op, err)
	}
	defer tx.Rollback()            //nolint:errcheck // a no-op after Commit
	defer changesOf(ctx).discard() // a no-op after publish
	if err := fn(tx); err != nil {
		if isTyped(err) {
			return err
		}
		return wrapCtx(ctx, op, err)
	}
	if s.guard != nil {
		if err := s.guard.same(); err != nil { // a commit into a deleted file would be lost
			return fmt.Errorf("%w: %s: %v", ErrInternal, op, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return wrapCtx(ctx, op, err)
	}
	return s.committedTx(ctx, op)
}

// committedTx is what follows every committed write transaction, on either
// engine: it is counted, its changes are published, and it is made durable
// before the caller answers anyone (Sync), unless the caller takes that on
// itself (DeferSync).
func (s *Store) committedTx(ctx context.Context, op string) error {
	s.committed.Add(1)
	s.feed.publish(ctx)
	if ctx.Value(deferSyncKey{}) != nil {
		return nil
	}
	if err := s.Sync(); err != nil {
		return fmt.Errorf("%w: %s", err, op)
	}
	return nil
}

type deferSyncKey struct{}

// DeferSync returns a context under which write methods return as soon as
// their transaction commits, without waiting for it to be durable. The
// caller must call Sync before it acknowledges the change to anyone. The
// queue manager uses it so that its single goroutine never waits for an
// fsync: it hands the wait to the caller it answers, and concurrent waits
// share one fsync.
func DeferSync(ctx context.Context) context.Context {
	return context.WithValue(ctx, deferSyncKey{}, true)
}

// Sync makes every transaction committed so far durable (see DeferSync). It
// returns ErrFull if the fsync fails for want of space, else ErrInternal if
// it fails.
func (s *Store) Sync() error {
	target := s.committed.Load()
	if s.synced.Load() >= target {
		return nil // an fsync that started after those commits already completed
	}
	if err := s.durable.Sync(); err != nil { // an fsync started after target was read
		if volume.IsFull(err) {
			return fmt.Errorf("%w: sync: %v", ErrFull, err)
		}
		return fmt.Errorf("%w: sync: %v", ErrInternal, err)
	}
	for {
		cur := s.synced.Load()
		if cur >= target || s.synced.CompareAndSwap(cur, target) {
			return nil
		}
	}
}

// Version counts the write transactions committed so far: while it stays the
// same, nothing in the database changed, so a reader may reuse what it read.
func (s *Store) Version() uint64 { return s.committed.Load() }

// SyncStats reports how many commits waited for durability and how many WAL
// fsyncs served them.
func (s *Store) SyncStats() (commits, fsyncs int64) { return s.durable.Stats() }

// readTx runs fn in one read transaction, giving it a consistent snapshot.
func (s *Store) readTx(ctx context.Context, op string, fn func(*Tx) error) error {
	tx, err := s.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return wrapCtx(ctx, op, err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	if err := fn(tx); err != nil {
		if isTyped(err) {
			return err
		}
		return wrapCtx(ctx, op, err)
	}
	return nil
}

func isTyped(err error) bool {
	for _, t := range []error{ErrNotFound, ErrWorkerNotFound, ErrConflict, ErrLocked, ErrNotAssignee, ErrRetryLimit, ErrBadToken, ErrOTPInvalid, ErrOTPExpired,
		ErrBusy, ErrPurged, ErrTimeout, ErrFull, ErrInternal} {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// wrapCtx is wrap, but reports a passed deadline as ErrTimeout.
func wrapCtx(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if cause := context.Cause(ctx); errors.Is(cause, errFilesUnusable) {
		return fmt.Errorf("%w: %s: %v", ErrInternal, op, cause)
	}
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, sqlite3.ErrInterrupt) {
		return fmt.Errorf("%w: %s: %v", ErrTimeout, op, err)
	}
	return wrap(op, err)
}

// wrap hides a driver error behind ErrInternal, keeping its text for the log.
// The driver error itself is not wrapped (%v), so it cannot be matched outside.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if isTyped(err) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: %s: %v", ErrTimeout, op, err)
	}
	if isFull(err) {
		return fmt.Errorf("%w: %s: %v", ErrFull, op, err)
	}
	return fmt.Errorf("%w: %s: %v", ErrInternal, op, err)
}

// isFull reports whether a driver or file error says the volume is full.
// SQLite answers SQLITE_FULL when a write to the database, its WAL or a
// temporary file fails with ENOSPC; it rolls the statement or transaction
// back (and the driver rolls back a failed COMMIT), so the write connection
// is left usable.
func isFull(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) && se.Code == sqlite3.ErrFull {
		return true
	}
	if pgFull(err) {
		return true
	}
	return volume.IsFull(err)
}

func ptrInt(n sql.NullInt64) *int64 {
	if !n.Valid {
		return nil
	}
	v := n.Int64
	return &v
}

func ptrString(n sql.NullString) *string {
	if !n.Valid {
		return nil
	}
	v := n.String
	return &v
}

// nullString is "" as NULL.
func nullString(s string) sql.NullString {
	return sql.NullString{String: s, Valid: s != ""}
}

// boolInt is a flag as the INTEGER columns store it (0 or 1) on both engines.
func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// noLimit is the LIMIT parameter that sets no bound: SQLite's -1,
// PostgreSQL's NULL (LIMIT ALL).
func noLimit(postgres bool) any {
	if postgres {
		return nil
	}
	return -1
}
