package clock

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestManualTimers: a manual timer fires when an Advance reaches it, not
// before; Stop releases it; a timer of no duration fires at once.
func TestManualTimers(t *testing.T) {
	t.Parallel()
	c := NewManual(time.Unix(1000, 0))
	tm := c.NewTimer(10 * time.Second)
	stopped := c.NewTimer(5 * time.Second)
	require.Equal(t, 2, c.Timers())
	require.True(t, stopped.Stop())
	require.False(t, stopped.Stop(), "stopped once")
	c.Advance(9 * time.Second)
	select {
	case <-tm.C():
		t.Fatal("fired early")
	default:
	}
	c.Advance(time.Second)
	require.Equal(t, time.Unix(1010, 0), <-tm.C())
	require.Zero(t, c.Timers())
	require.False(t, tm.Stop(), "already fired")
	select {
	case <-stopped.C():
		t.Fatal("a stopped timer fired")
	default:
	}
	now := c.NewTimer(0)
	require.Equal(t, time.Unix(1010, 0), <-now.C())
}
