package httpapi

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSessions(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	ss := newSessions(func() time.Time { return now })

	t.Run("LiveUntilEnded", func(t *testing.T) {
		id, err := ss.create()
		require.NoError(t, err)
		s, ok := ss.get(id)
		require.True(t, ok)
		require.Len(t, s.csrf, 43)
		_, ok = ss.get(id + "x")
		require.False(t, ok, "another value is no session")
		_, ok = ss.get("")
		require.False(t, ok)
		ss.end(id)
		_, ok = ss.get(id)
		require.False(t, ok, "ended")
	})

	t.Run("FullDropsTheOldest", func(t *testing.T) {
		ss := newSessions(func() time.Time { return now })
		first, err := ss.create()
		require.NoError(t, err)
		for i := 1; i < maxSessions; i++ {
			now = now.Add(time.Millisecond)
			_, err := ss.create()
			require.NoError(t, err)
		}
		_, ok := ss.get(first)
		require.True(t, ok)
		last, err := ss.create()
		require.NoError(t, err)
		_, ok = ss.get(first)
		require.False(t, ok, "the session closest to its end went")
		_, ok = ss.get(last)
		require.True(t, ok)
		require.Len(t, ss.m, maxSessions)
		now = now.Add(sessionTTL)
		_, ok = ss.get(last)
		require.False(t, ok, "expired")
	})
}

func TestSafeNext(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/builds/x?y=1": "/builds/x?y=1", "": "/", "https://evil.example/": "/", "//evil.example": "/",
		"/\\evil.example": "/", "builds": "/", "/a\r\nSet-Cookie: x": "/",
	} {
		require.Equal(t, want, safeNext(in), in)
	}
}
