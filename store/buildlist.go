package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/expo-free-agent/controller/store/domain"
)

// MaxBuildPage is the most builds one BuildPage returns.
const MaxBuildPage = 500

// BuildQuery selects one page of the build list (docs/API.md §2.2). Empty
// fields do not filter.
type BuildQuery struct {
	Status   domain.BuildStatus
	Platform domain.Platform
	// WorkerID matches the build's worker_id: its current assignee, or the
	// worker that finished it (a pending build has none).
	WorkerID string
	// AppName matches the build's app name, case-insensitively (ASCII).
	AppName string
	// IDPrefix matches the builds whose id starts with it (lower-case hex
	// and dashes; the caller checks). It reads the primary key's range, and
	// the page is then in id order, not list order: Before is then the last
	// id of the previous page.
	IDPrefix string
	// Before is a build id, the last of the previous page: the page holds
	// the builds after it in list order. Empty starts at the newest build.
	Before string
	// Limit is the page's length, 1 to MaxBuildPage; anything else is
	// MaxBuildPage.
	Limit int
}

// BuildPage returns the builds that match q in list order — newest submission
// first, ties by id descending — at most q.Limit of them, and whether more
// follow. The page starts after q.Before by the key (submitted_at, id), which
// never changes once a build exists, so that a client walking the pages sees
// every build that existed when it started exactly once, whatever is
// submitted or changes state meanwhile; a build submitted during the walk
// shows up at most once. It reads one index range and never the whole table.
// It returns ErrNotFound when q.Before names no build, else ErrTimeout or
// ErrInternal.
func (s *Store) BuildPage(ctx context.Context, q BuildQuery) ([]domain.Build, bool, error) {
	if q.Limit < 1 || q.Limit > MaxBuildPage {
		q.Limit = MaxBuildPage
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var (
		out  []domain.Build
		more bool
	)
	err := s.readTx(ctx, "build page", func(tx *Tx) error {
		var cursor *buildKey
		if q.Before != "" {
			var k buildKey
			err := tx.QueryRowContext(ctx, `SELECT submitted_at, id FROM builds WHERE id = ?`, q.Before).
				Scan(&k.submittedAt, &k.id)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("%w: build page: no build %q before which to list", ErrNotFound, q.Before)
			}
			if err != nil {
				return err
			}
			cursor = &k
		}
		query, args := buildPageQuery(q, cursor, s.pg)
		rows, err := tx.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		out = make([]domain.Build, 0, min(q.Limit, 100))
		for rows.Next() {
			if len(out) == q.Limit { // the extra row: only says that more follow
				more = true
				break
			}
			b, err := scanBuild(rows)
			if err != nil {
				return err
			}
			out = append(out, b)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, false, err
	}
	return out, more, nil
}

// buildKey is a build's place in the list.
type buildKey struct {
	submittedAt int64
	id          string
}

// buildPageQuery is the SQL of a page: q's filters, the rows after cursor
// (nil: from the newest), in list order, one row more than the page to tell
// whether more follow. The statement is assembled from fixed fragments only
// (every value is a parameter), so its few shapes stay in the connection's
// statement cache. INDEXED BY names the index that the most selective filter
// given reads in list order: without statistics, SQLite would pick among
// equally good-looking indexes at random (a worker's few builds found by
// scanning a whole platform); and a statement that could not use it fails
// instead of scanning the table.
func buildPageQuery(q BuildQuery, cursor *buildKey, postgres bool) (string, []any) {
	index := "builds_by_submitted"
	var (
		where []string
		args  []any
	)
	// Least selective first: each later filter's index wins.
	if q.Platform != "" {
		where, args, index = append(where, "platform = ?"), append(args, string(q.Platform)), "builds_by_platform"
	}
	if q.Status != "" {
		where, args, index = append(where, "status = ?"), append(args, string(q.Status)), "builds_by_status"
	}
	if q.WorkerID != "" {
		where, args, index = append(where, "worker_id = ?"), append(args, q.WorkerID), "builds_by_worker"
	}
	if q.AppName != "" {
		match := "app_name = ? COLLATE NOCASE"
		if postgres {
			match = "lower(app_name) = lower(?)" // its index is on lower(app_name)
		}
		where, args, index = append(where, match), append(args, q.AppName), "builds_by_app"
	}
	if q.IDPrefix != "" {
		// The id range [prefix, prefix + U+FFFF): the primary key's index.
		where, args = append(where, "id >= ? AND id < ?"), append(args, q.IDPrefix, q.IDPrefix+"\uffff")
		if cursor != nil {
			where, args = append(where, "id > ?"), append(args, cursor.id)
		}
		return buildPageSQL("sqlite_autoindex_builds_1", where, "id"), append(args, q.Limit+1)
	}
	if cursor != nil {
		where, args = append(where, "(submitted_at, id) < (?, ?)"), append(args, cursor.submittedAt, cursor.id)
	}
	return buildPageSQL(index, where, "submitted_at DESC, id DESC"), append(args, q.Limit+1)
}

// buildPageSQL assembles a page's statement from fixed fragments.
func buildPageSQL(index string, where []string, order string) string {
	var sb strings.Builder
	sb.WriteString(`SELECT ` + buildColumns + ` FROM builds INDEXED BY ` + index)
	if len(where) > 0 {
		sb.WriteString(" WHERE " + strings.Join(where, " AND "))
	}
	sb.WriteString(" ORDER BY " + order + " LIMIT ?")
	return sb.String()
}
