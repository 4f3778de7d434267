package store

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"sync"

	"github.com/expo-free-agent/controller/store/domain"
)

// Log lines posted by many workers at once share transactions (group
// commit): every AppendLogs call joins a queue, and the first caller in the
// queue runs one transaction for as many queued calls as fit in a batch,
// then hands the lead to the next caller waiting. Under load a transaction
// then carries the lines of tens of requests instead of one, so the single
// write connection stores far more lines per second, and each caller still
// learns its own outcome (a call refused as not the assignee does not fail
// the others). A call is taken into a batch whole or not at all; once taken,
// its outcome is the batch transaction's, whatever its own deadline.

const (
	// maxBatchLines bounds the lines of one append transaction, so that it
	// holds the write connection only briefly (other writers wait for it).
	maxBatchLines = 2000
	// maxQueuedLogBytes bounds the message bytes waiting for a transaction;
	// beyond it an append is refused at once with ErrBusy, and the caller
	// is asked to retry, rather than queued until its deadline.
	maxQueuedLogBytes = 16 << 20
)

// ErrBusy means too much work is already waiting for the database; nothing
// was written, and the same call may be retried shortly.
var ErrBusy = errors.New("store: too many writes waiting")

// logAppend is one AppendLogs call waiting in the queue.
type logAppend struct {
	ctx      context.Context // the caller's; a call cancelled before it is taken is dropped
	buildID  string
	workerID string
	lines    []LogInput // messages already clipped
	now      int64
	bytes    int
	lead     chan struct{} // the caller now leads (runs the next batch)
	done     chan error    // the outcome; buffered, sent once
}

// logAppender is the queue of waiting appends.
type logAppender struct {
	mu      sync.Mutex
	queue   []*logAppend
	bytes   int
	leading bool // a caller leads: runs a batch, or has been told to
}

// AppendLogs appends lines to a build's log, in order, each with the next
// sequence number and the time now; a line longer than domain.MaxLogMessage
// is clipped (domain.Clip). When workerID is not empty the lines come
// from a worker: it must be the current assignee (else ErrNotAssignee and
// nothing is written), and the build's liveness is refreshed (assigned becomes
// building). It returns the number stored, or ErrNotFound; ErrBusy when too
// many lines already wait to be stored, and ErrTimeout when they were not
// stored within the store's deadline (in both cases nothing was written).
func (s *Store) AppendLogs(ctx context.Context, buildID, workerID string, lines []LogInput, now int64) (int, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	if err := ctx.Err(); err != nil { // the files are unusable, or the caller gave up
		return 0, wrapCtx(ctx, "append logs", err)
	}
	a := &logAppend{ctx: ctx, buildID: buildID, workerID: workerID, now: now,
		lines: lines, lead: make(chan struct{}, 1), done: make(chan error, 1)}
	copied := false // the caller's lines stay as they are: copied on the first change
	for i, l := range lines {
		if m := domain.Clip(l.Message, domain.MaxLogMessage); m != l.Message {
			if !copied {
				a.lines, copied = slices.Clone(lines), true
			}
			a.lines[i].Message = m
		}
		a.bytes += len(a.lines[i].Message)
	}
	if err := s.appender.join(a); err != nil {
		return 0, err
	}
	for {
		select {
		case <-a.lead:
			s.leadAppends(ctx)
		case err := <-a.done:
			if err != nil {
				return 0, err
			}
			if err := s.Sync(); err != nil { // durable before the caller answers anyone
				return 0, err
			}
			return len(lines), nil
		case <-ctx.Done():
			if s.appender.withdraw(a) {
				return 0, wrapCtx(ctx, "append logs", ctx.Err())
			}
			// Taken into a batch (or dropped by its leader): the outcome
			// follows on done.
			ctx = context.WithoutCancel(ctx)
		}
	}
}

// join queues a; the first caller when nobody leads is told to lead. A
// queue already holding maxQueuedLogBytes refuses a with ErrBusy.
func (q *logAppender) join(a *logAppend) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queue) > 0 && q.bytes+a.bytes > maxQueuedLogBytes {
		return ErrBusy
	}
	q.queue = append(q.queue, a)
	q.bytes += a.bytes
	if !q.leading {
		q.leading = true
		a.lead <- struct{}{}
	}
	return nil
}

// withdraw takes a out of the queue if no batch has taken it, passing the
// lead on if a had been told to lead. It reports whether a was withdrawn.
func (q *logAppender) withdraw(a *logAppend) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := slices.Index(q.queue, a)
	if i < 0 {
		return false
	}
	q.queue = slices.Delete(q.queue, i, i+1)
	q.bytes -= a.bytes
	select {
	case <-a.lead:
		q.passLead()
	default:
	}
	return true
}

// take removes the next batch from the queue: the first waiting calls, up
// to maxBatchLines lines (at least one call). Calls whose caller has given
// up are dropped on the way, told so.
func (q *logAppender) take() []*logAppend {
	q.mu.Lock()
	defer q.mu.Unlock()
	var batch []*logAppend
	n := 0
	for len(q.queue) > 0 {
		a := q.queue[0]
		if len(batch) > 0 && n+len(a.lines) > maxBatchLines {
			break
		}
		q.queue[0] = nil
		q.queue = q.queue[1:]
		q.bytes -= a.bytes
		if err := a.ctx.Err(); err != nil {
			a.done <- wrapCtx(a.ctx, "append logs", err)
			continue
		}
		batch = append(batch, a)
		n += len(a.lines)
	}
	return batch
}

// passLead tells the first waiting call to lead, or notes that nobody
// leads. The caller holds q.mu.
func (q *logAppender) passLead() {
	if len(q.queue) == 0 {
		q.leading = false
		return
	}
	q.queue[0].lead <- struct{}{}
}

// leadAppends runs one batch — which holds the leader's own call, first in
// the queue — then passes the lead on.
func (s *Store) leadAppends(ctx context.Context) {
	defer func() {
		s.appender.mu.Lock()
		s.appender.passLead()
		s.appender.mu.Unlock()
	}()
	batch := s.appender.take()
	if len(batch) == 0 {
		return
	}
	// The batch is everybody's: it runs under a deadline of its own, not
	// the leader's request context (a leader that hangs up must not fail
	// the others). Each caller waits for durability itself (Sync), so the
	// next leader starts its transaction while the fsync runs.
	bctx, cancel := s.opContext(DeferSync(context.WithoutCancel(ctx)))
	defer cancel()
	outcomes := make([]error, len(batch))
	err := s.tx(bctx, "append logs", func(tx *Tx) error {
		ins := &logInserts{tx: tx}
		defer ins.close()
		for i, a := range batch {
			err := appendLines(bctx, tx, ins, a)
			if errors.Is(err, ErrNotFound) || errors.Is(err, ErrNotAssignee) {
				outcomes[i] = err // refused before it wrote anything
				continue
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	for i, a := range batch {
		if err != nil {
			a.done <- err
		} else {
			a.done <- outcomes[i]
		}
	}
}

// appendLines is one call's part of a batch: the assignee check and
// liveness, then its lines after the build's last sequence number.
func appendLines(ctx context.Context, tx *Tx, ins *logInserts, a *logAppend) error {
	if a.workerID != "" {
		if _, err := touchAssignee(ctx, tx, a.buildID, a.workerID, a.now); err != nil {
			return err
		}
	} else if _, err := getBuild(ctx, tx, a.buildID); err != nil {
		return err
	}
	if len(a.lines) == 0 {
		return nil
	}
	var seq int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM build_logs WHERE build_id = ?`,
		a.buildID).Scan(&seq); err != nil {
		return err
	}
	// What repeats in every row is boxed once (each boxing of a value into
	// an argument is an allocation, five per line otherwise).
	id, now := any(a.buildID), any(a.now)
	entries := make([]domain.LogEntry, len(a.lines))
	for rest, first := a.lines, seq+1; len(rest) > 0; {
		n := insertRows(len(rest))
		stmt, err := ins.stmt(ctx, n)
		if err != nil {
			return err
		}
		args := ins.args[:0]
		for _, l := range rest[:n] {
			seq++
			args = append(args, id, seq, now, levelArg(l.Level), l.Message)
			entries[seq-first] = domain.LogEntry{Seq: seq, Timestamp: a.now, Level: l.Level, Message: l.Message}
		}
		ins.args = args
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return err
		}
		rest = rest[n:]
	}
	noteLogs(ctx, a.buildID, entries)
	return nil
}

// The log levels boxed as arguments once.
var infoArg, warnArg, errorArg any = string(domain.LevelInfo), string(domain.LevelWarn), string(domain.LevelError)

func levelArg(l domain.LogLevel) any {
	switch l {
	case domain.LevelInfo:
		return infoArg
	case domain.LevelWarn:
		return warnArg
	case domain.LevelError:
		return errorArg
	}
	return string(l)
}

// Lines are inserted several rows per statement: one statement's call
// through database/sql and the driver, instead of one per line, was most
// of the single writer's time per line. The row counts are few (each is
// a statement the driver keeps prepared per connection), largest first.
var insertRowCounts = [...]int{64, 16, 4, 1}

// insertRows is how many of n lines the next statement inserts.
func insertRows(n int) int {
	for _, k := range insertRowCounts {
		if n >= k {
			return k
		}
	}
	return 1
}

var insertLogSQL = func() map[int]string {
	m := map[int]string{}
	for _, k := range insertRowCounts {
		var b strings.Builder
		b.WriteString("INSERT INTO build_logs (build_id, seq, timestamp, level, message) VALUES ")
		for i := range k {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?, ?, ?)")
		}
		m[k] = b.String()
	}
	return m
}()

// logInserts are a batch transaction's insert statements, prepared when
// first needed, and the argument list they reuse.
type logInserts struct {
	tx    *Tx
	stmts map[int]*sql.Stmt
	args  []any
}

func (ins *logInserts) stmt(ctx context.Context, rows int) (*sql.Stmt, error) {
	if st := ins.stmts[rows]; st != nil {
		return st, nil
	}
	st, err := ins.tx.PrepareContext(ctx, insertLogSQL[rows])
	if err != nil {
		return nil, err
	}
	if ins.stmts == nil {
		ins.stmts = map[int]*sql.Stmt{}
	}
	ins.stmts[rows] = st
	return st, nil
}

func (ins *logInserts) close() {
	for _, st := range ins.stmts {
		st.Close()
	}
}
