package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/expo-free-agent/controller/store/fsync"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// PostgreSQL (docs/DEPLOYMENT.md, Several nodes). The same statements and
// methods as SQLite (dialect.go); what differs lives here:
//
//   - Every write transaction runs SERIALIZABLE, and one that PostgreSQL
//     aborts for a serialization failure or a deadlock is run again (up to
//     pgRetries times, within the operation's deadline). So each method keeps
//     the guarantee it has on SQLite, where one writer runs at a time: its
//     reads and its conditional writes see one state, whichever node or
//     connection writes beside it. The assignments lock the build they take
//     with FOR UPDATE SKIP LOCKED, so a build another node is assigning is
//     skipped at once instead of waited for; AssignNext runs READ COMMITTED,
//     deciding only on the rows it locks (assignment.go).
//   - The writing connection commits without waiting for the WAL flush
//     (synchronous_commit off); a write method then waits for a flush shared
//     by every caller waiting at that moment (Sync, pgFlush: the group commit
//     SQLite's WAL fsync has), unless its caller takes that on itself
//     (DeferSync, the queue manager).
//   - A transaction that changed builds tells the other nodes, in the same
//     commit, with NOTIFY (Listener, notify.go).
//   - Migrations are PostgreSQL's own files (migrations/postgres), applied
//     under an advisory lock so that nodes starting together apply each once.

// pgRetries bounds the re-runs of a write transaction aborted by a
// serialization failure or a deadlock.
const pgRetries = 20

// migrationLock is the advisory lock key held while migrations run.
const migrationLock = 0x0efa_0001

// IsPostgresURL reports whether a --db value names a PostgreSQL database
// (postgres:// or postgresql://) rather than a SQLite file.
func IsPostgresURL(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// RedactURL returns a PostgreSQL URL without its password, for logs and
// messages; anything else unchanged.
func RedactURL(db string) string {
	if !IsPostgresURL(db) {
		return db
	}
	u, err := url.Parse(db)
	if err != nil {
		return "postgres://…"
	}
	return u.Redacted()
}

// Pool sizes of a PostgreSQL store. One writing connection per node keeps
// a node's writes in the order its actors issue them, as on SQLite; the
// database orders the nodes' writes among themselves. The reading pool's
// size is the URL's pool_max_conns (pgxpool's name for it), else
// pgReadConns.
const (
	pgWriteConns    = 1
	pgReadConns     = 4
	pgMaxReadConns  = 64
	poolMaxConnsKey = "pool_max_conns"
)

// readPoolSize takes pool_max_conns out of the URL (the driver would send it
// to the server as a setting) and returns the reading pool's size.
func readPoolSize(dsn string) (string, int, error) {
	n := pgReadConns
	out, err := editQuery(dsn, func(q url.Values) error {
		v := q.Get(poolMaxConnsKey)
		if v == "" {
			return nil
		}
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > pgMaxReadConns {
			return fmt.Errorf("%s=%q: want a whole number from 1 to %d", poolMaxConnsKey, v, pgMaxReadConns)
		}
		q.Del(poolMaxConnsKey)
		return nil
	})
	if err != nil {
		return "", 0, err
	}
	return out, n, nil
}

func openPostgres(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	s := &Store{opTimeout: DefaultOpTimeout, migrateTO: DefaultMigrateTimeout, pg: true, node: uuid.NewString(), dsn: dsn}
	for _, o := range opts {
		o(s)
	}
	name := RedactURL(dsn)
	dsn, readConns, err := readPoolSize(dsn)
	if err != nil {
		return nil, &openError{ErrBadURL, fmt.Sprintf("the database URL %s: %v", name, err)}
	}
	s.dsn = dsn
	d := &dialect{postgres: true}
	// The writing connection commits without waiting for the WAL flush;
	// every write is made durable before it is answered by a flush shared
	// by every caller waiting at that moment (Sync, pgFlush): PostgreSQL's
	// commits, like SQLite's, then cost one round trip less and share their
	// flushes.
	wdsn, err := withParam(dsn, "synchronous_commit", "off")
	if err != nil {
		return nil, &openError{ErrInternal, fmt.Sprintf("cannot open the database %s: %v", name, err)}
	}
	w, err := sql.Open("pgx", wdsn)
	if err != nil {
		return nil, &openError{ErrInternal, fmt.Sprintf("cannot open the database %s: %v", name, err)}
	}
	w.SetMaxOpenConns(pgWriteConns)
	w.SetMaxIdleConns(pgWriteConns)
	r, err := sql.Open("pgx", dsn)
	if err != nil {
		w.Close()
		return nil, &openError{ErrInternal, fmt.Sprintf("cannot open the database %s: %v", name, err)}
	}
	r.SetMaxOpenConns(readConns)
	r.SetMaxIdleConns(readConns)
	s.write, s.read = &pool{w, d}, &pool{r, d}
	s.durable = fsync.NewGroup(s.pgFlush)
	fail := func(what string, err error) (*Store, error) {
		r.Close()
		w.Close()
		return nil, openFailed(ctx, what+" "+name, err)
	}
	pctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	err = w.PingContext(pctx)
	cancel()
	if err != nil {
		return fail("cannot connect to the database", err)
	}
	if err := s.migratePostgres(ctx); err != nil {
		return fail("cannot bring to this version's schema the database", err)
	}
	var schema string
	pctx, cancel = context.WithTimeout(ctx, s.opTimeout)
	err = r.QueryRowContext(pctx, `SELECT current_schema()`).Scan(&schema)
	cancel()
	if err != nil {
		return fail("cannot read the schema of the database", err)
	}
	s.channel = notifyChannel(schema)
	return s, nil
}

// migratePostgres applies the migrations while holding the advisory lock,
// on a connection of the read pool (the write pool's one connection runs
// them).
func (s *Store) migratePostgres(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.migrateTO)
	defer cancel()
	conn, err := s.read.DB.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		return err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLock) //nolint:errcheck // ends with the session anyway
	return s.migrate(ctx)
}

// pgTx is txAt on PostgreSQL: at its isolation level, re-run when aborted
// by a serialization failure or deadlock, and announcing its builds'
// changes to the other nodes in its own commit.
func (s *Store) pgTx(ctx context.Context, op string, level sql.IsolationLevel, fn func(*Tx) error) error {
	for attempt := 0; ; attempt++ {
		err := s.pgTxOnce(ctx, level, fn)
		if err == nil {
			return s.committedTx(ctx, op)
		}
		if isTyped(err) {
			return err
		}
		if !retryable(err) || attempt == pgRetries || ctx.Err() != nil {
			return wrapCtx(ctx, op, err)
		}
		// Two transactions that aborted each other must not meet again.
		t := time.NewTimer(time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 5))))
		select {
		case <-ctx.Done():
			t.Stop()
			return wrapCtx(ctx, op, ctx.Err())
		case <-t.C:
		}
	}
}

func (s *Store) pgTxOnce(ctx context.Context, level sql.IsolationLevel, fn func(*Tx) error) error {
	changesOf(ctx).discard() // what an aborted attempt collected
	tx, err := s.write.BeginTx(ctx, &sql.TxOptions{Isolation: level})
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if err := fn(tx); err != nil {
		return err
	}
	if payload := changesOf(ctx).notification(s.node); payload != "" {
		if _, err := tx.ExecContext(ctx, `SELECT pg_notify(?, ?)`, s.channel, payload); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// retryable reports a serialization failure or a deadlock: the transaction
// was rolled back and may simply run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// pgFull reports PostgreSQL's disk_full (53100).
func pgFull(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "53100"
}

// pgFlush makes every transaction committed so far durable: a transaction
// that gets an id commits synchronously, and its commit waits for the WAL to
// be flushed up to its own record, which lies after every earlier commit's.
// It runs on a reading connection, so the writer never waits for it.
func (s *Store) pgFlush() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.opTimeout)
	defer cancel()
	tx, err := s.read.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if _, err := tx.ExecContext(ctx, `SELECT pg_current_xact_id()`); err != nil {
		return err
	}
	return tx.Commit()
}

// withParam returns the PostgreSQL URL dsn with the run-time parameter
// name=value (a connection setting).
func withParam(dsn, name, value string) (string, error) {
	return editQuery(dsn, func(q url.Values) error {
		q.Set(name, value)
		return nil
	})
}

// editQuery returns the URL dsn with its query edited by edit.
func editQuery(dsn string, edit func(url.Values) error) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", err
	}
	q := u.Query()
	if err := edit(q); err != nil {
		return "", err
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
