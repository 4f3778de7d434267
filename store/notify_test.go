package store

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store/domain"
)

// TestNotificationFits: a notice says what each build became while that
// fits PostgreSQL's payload limit, then only which builds changed (other
// nodes read them), then "everything"; a notice of a node that sends ids
// only (an older version) is read as ChangeUnknown for each.
func TestNotificationFits(t *testing.T) {
	decode := func(s string) notice {
		t.Helper()
		require.LessOrEqual(t, len(s), maxNotice)
		var n notice
		require.NoError(t, json.Unmarshal([]byte(s), &n))
		return n
	}
	collect := func(builds int) *changes {
		ctx := withChanges(context.Background())
		for range builds {
			noteStatus(ctx, BuildChange{ID: uuid.NewString(), Kind: ChangeRunning, Assignment: 3, WorkerID: uuid.NewString(),
				StartedAt: 1764280000000, Platform: domain.PlatformAndroid, SubmittedAt: 1764270000000, Certs: true})
		}
		return changesOf(ctx)
	}
	require.Empty(t, (&changes{}).notification("node"))

	one := collect(1)
	var only BuildChange
	for _, c := range one.status {
		only = c
	}
	n := decode(one.notification("node"))
	require.Equal(t, "node", n.Node)
	require.Equal(t, []BuildChange{only}, n.changed())

	// Changes that do not fit: ids only.
	many := collect(40)
	n = decode(many.notification("node"))
	require.False(t, n.All)
	require.Len(t, n.Status, 40)
	require.Empty(t, n.Changes)
	for _, c := range n.changed() {
		require.Equal(t, ChangeUnknown, c.Kind)
		require.Contains(t, many.status, c.ID)
	}

	// Ids that do not fit either: everything.
	n = decode(collect(200).notification("node"))
	require.True(t, n.All)
	require.Empty(t, n.Status)

	// An older node's notice: ids only.
	var old notice
	require.NoError(t, json.NewDecoder(strings.NewReader(`{"n":"x","s":["a","b"]}`)).Decode(&old))
	require.Equal(t, []BuildChange{{ID: "a"}, {ID: "b"}}, old.changed())
}
