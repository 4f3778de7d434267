package testkit

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// The test suites run on SQLite, and again on PostgreSQL when TEST_STORE is
// "postgres" (make test does both when TEST_DATABASE_URL names a server;
// docs/TESTING.md, PostgreSQL).
const (
	// EnvDatabaseURL names the PostgreSQL server the tests may use, as a
	// postgres:// URL of a database whose user may create schemas.
	EnvDatabaseURL = "TEST_DATABASE_URL"
	// EnvStore selects the backend of the stores the tests open: "postgres"
	// or empty (SQLite).
	EnvStore = "TEST_STORE"
)

// Postgres reports whether this run's stores are PostgreSQL.
func Postgres() bool { return os.Getenv(EnvStore) == "postgres" }

// DB returns what a test passes to store.Open (or --db): on SQLite the
// database file in dir; on PostgreSQL the URL of a fresh schema of its own
// (PostgresURL).
//
// The same dir gives the same database (a restart on the same directory
// finds its data again), as long as the first test that asked is running.
func DB(t testing.TB, dir string) string {
	t.Helper()
	if !Postgres() {
		return filepath.Join(dir, "data", "controller.db")
	}
	schemasMu.Lock()
	defer schemasMu.Unlock()
	if u, ok := schemas[dir]; ok {
		return u
	}
	u := PostgresURL(t)
	schemas[dir] = u
	t.Cleanup(func() {
		schemasMu.Lock()
		delete(schemas, dir)
		schemasMu.Unlock()
	})
	return u
}

var (
	schemasMu sync.Mutex
	schemas   = map[string]string{} // dir -> URL (DB)
)

// PostgresURL creates an empty schema on the server of TEST_DATABASE_URL and
// returns a URL whose connections use it (search_path); the schema is
// dropped when the test ends. Without a server the test is skipped with how
// to run it, or, under CI, fails.
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvDatabaseURL)
	if base == "" {
		msg := "PostgreSQL tests need a server: set " + EnvDatabaseURL +
			"=postgres://user:password@host/db (make test does, when it is set; docs/TESTING.md)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("%s: %v", EnvDatabaseURL, err)
	}
	defer db.Close()
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "t_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create a schema on %s: %v", EnvDatabaseURL, err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", base)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", EnvDatabaseURL, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// SQLiteOnly skips, on a PostgreSQL run, a test of what only SQLite has
// (its files, WAL, PRAGMAs, query plans, migrations from older versions).
func SQLiteOnly(t testing.TB, what string) {
	t.Helper()
	if Postgres() {
		t.Skip("SQLite only (" + what + "): not part of a PostgreSQL store")
	}
}

// OpenRaw opens db — a value DB returned — directly with its driver, for a
// test that looks or reaches behind the controller's back; write its
// statements in SQLite's spelling and pass them through Q.
func OpenRaw(t testing.TB, db string) *sql.DB {
	t.Helper()
	driver, dsn := "sqlite3", "file:"+db+"?_busy_timeout=5000&_fk=1"
	if Postgres() {
		driver, dsn = "pgx", db
	}
	raw, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatalf("open %s: %v", driver, err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

// Q is a test's statement, written with ? placeholders, for this run's
// engine: on PostgreSQL they become $1, $2 ... (the tests' statements hold
// no ? inside literals).
func Q(query string) string {
	if !Postgres() {
		return query
	}
	var b strings.Builder
	n := 0
	for _, c := range query {
		if c == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}
