package testkit

import "go.uber.org/goleak"

// LeakOptions are the goleak options of the packages whose tests use a
// database: pgx closes a connection whose query's context was cancelled in
// a goroutine of its own (sending the server a cancel request and
// Terminate, then waiting for the server to close, at most 15 s), which may
// still run when a package's tests end. It is bounded and pgx's, not a
// goroutine of ours left behind.
func LeakOptions(more ...goleak.Option) []goleak.Option {
	return append([]goleak.Option{
		goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgconn.(*PgConn).asyncClose.func1"),
	}, more...)
}
