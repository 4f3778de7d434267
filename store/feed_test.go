package store_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// TestSubscribe: a subscription receives a build's new log entries, in
// order with their sequence numbers, and its status changes, as they commit;
// nothing of other builds, nothing of a transaction that did not commit, and
// a reader that falls behind is told to catch up from the database.
func TestSubscribe(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	b, w := d.running(t, "w", t0)
	other := d.build(t, t0)
	sub := d.s.Subscribe(b)
	defer sub.Close()

	_, err := d.s.AppendLogs(t.Context(), b, w, []store.LogInput{{Level: domain.LevelInfo, Message: "one"},
		{Level: domain.LevelWarn, Message: "two"}}, t0+10)
	require.NoError(t, err)
	_, err = d.s.AppendLogs(t.Context(), other, "", []store.LogInput{{Level: domain.LevelInfo, Message: "elsewhere"}}, t0+10)
	require.NoError(t, err)
	kicked(t, sub)
	entries, lagged, status := sub.Take()
	require.False(t, lagged)
	require.True(t, status, "the first worker line moved the build from assigned to building")
	logs := d.logs(t, b)
	require.Equal(t, logs[len(logs)-2:], entries, "the entries as stored, seq included")

	// A refused write publishes nothing.
	_, err = d.s.AppendLogs(t.Context(), b, "not-the-assignee", []store.LogInput{{Level: domain.LevelInfo, Message: "x"}}, t0+20)
	require.ErrorIs(t, err, store.ErrNotAssignee)
	select {
	case <-sub.C:
		t.Fatal("a refused write was published")
	default:
	}

	// A status change alone.
	_, err = d.s.CancelBuild(t.Context(), b, t0+30)
	require.NoError(t, err)
	kicked(t, sub)
	entries, _, status = sub.Take()
	require.True(t, status)
	require.Equal(t, "Build cancelled", entries[len(entries)-1].Message)

	// Falling behind: more than the buffer between two reads.
	b2, w2 := d.running(t, "w2", t0)
	sub2 := d.s.Subscribe(b2)
	defer sub2.Close()
	big := strings.Repeat("x", 16<<10)
	for range 70 { // 70 × 16 KiB > 1 MiB
		_, err := d.s.AppendLogs(t.Context(), b2, w2, []store.LogInput{{Level: domain.LevelInfo, Message: big}}, t0+40)
		require.NoError(t, err)
	}
	kicked(t, sub2)
	entries, lagged, _ = sub2.Take()
	require.True(t, lagged)
	require.Empty(t, entries, "a lagging reader reads the database instead")
}

// kicked waits for the subscription's kick, failing the test after 10 s
// instead of hanging it.
func kicked(t *testing.T, sub *store.Subscription) {
	t.Helper()
	select {
	case <-sub.C:
	case <-time.After(10 * time.Second):
		t.Fatal("the subscription was not kicked")
	}
}
