package store

import (
	"context"

	"github.com/expo-free-agent/controller/store/domain"
)

// Counts is the number of builds in each state.
type Counts struct {
	Pending, Assigned, Building, Completed, Failed int
}

// Active is assigned + building.
func (c Counts) Active() int { return c.Assigned + c.Building }

// BuildCounts counts builds by state.
func (s *Store) BuildCounts(ctx context.Context) (Counts, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var c Counts
	err := s.readTx(ctx, "build counts", func(tx *Tx) error {
		return buildCounts(ctx, tx, &c)
	})
	return c, err
}

func buildCounts(ctx context.Context, tx *Tx, c *Counts) error {
	// Kept by triggers (migration 0003_bounded_reads): five rows, whatever the
	// history (on PostgreSQL a few per status, summed: see its 0001_init.sql).
	rows, err := tx.QueryContext(ctx, `SELECT status, CAST(SUM(n) AS BIGINT) FROM build_counts GROUP BY status`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			st domain.BuildStatus
			n  int
		)
		if err := rows.Scan(&st, &n); err != nil {
			return err
		}
		switch st {
		case domain.StatusPending:
			c.Pending = n
		case domain.StatusAssigned:
			c.Assigned = n
		case domain.StatusBuilding:
			c.Building = n
		case domain.StatusCompleted:
			c.Completed = n
		case domain.StatusFailed:
			c.Failed = n
		}
	}
	return rows.Err()
}

// Stats are the public figures of docs/API.md §3.2.
type Stats struct {
	NodesOnline      int
	BuildsQueued     int
	ActiveBuilds     int
	BuildsToday      int
	TotalBuilds      int
	TotalBuildTimeMS int64
	TotalCPUCycles   float64
}

// Stats computes the public statistics from one consistent snapshot: workers
// idle or building seen at or after onlineSince, and completed builds with
// completed_at at or after dayStart.
func (s *Store) Stats(ctx context.Context, onlineSince, dayStart int64) (Stats, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var st Stats
	err := s.readTx(ctx, "stats", func(tx *Tx) error {
		var c Counts
		if err := buildCounts(ctx, tx, &c); err != nil {
			return err
		}
		st.BuildsQueued, st.ActiveBuilds, st.TotalBuilds = c.Pending, c.Active(), c.Completed+c.Failed
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM workers WHERE status IN ('idle', 'building')
			AND last_seen_at >= ?`, onlineSince).Scan(&st.NodesOnline); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM builds WHERE status = 'completed'
			AND completed_at >= ?`, dayStart).Scan(&st.BuildsToday); err != nil {
			return err
		}
		// Kept by triggers (migration 0009_history_totals): one row, whatever
		// the history (on PostgreSQL a few, summed).
		var samples int64
		var cpuSum float64
		if err := tx.QueryRowContext(ctx, `SELECT CAST(SUM(build_time_ms) AS BIGINT), CAST(SUM(cpu_samples) AS BIGINT),
			SUM(cpu_percent) FROM history_totals`).Scan(&st.TotalBuildTimeMS, &samples, &cpuSum); err != nil {
			return err
		}
		if samples > 0 {
			st.TotalCPUCycles = cpuSum / float64(samples) / 100 * float64(st.TotalBuildTimeMS) / 1000
		}
		return nil
	})
	return st, err
}
