package httpapi

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLimitListener: past its limit the listener takes no new connection
// (it waits in the kernel's backlog, using no descriptor) until one closes;
// Close releases a waiting Accept.
func TestLimitListener(t *testing.T) {
	t.Parallel()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := newLimitListener(tcp, 2)
	accepted := make(chan net.Conn, 4)
	acceptErr := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			accepted <- c
		}
	}()
	var clients []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", tcp.Addr().String()) // the third completes in the backlog
		require.NoError(t, err)
		clients = append(clients, c)
	}
	first := <-accepted
	<-accepted
	require.Equal(t, cap(ln.slots), len(ln.slots), "both slots are taken")
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted past the limit")
	default: // Accept is blocked on the slots, so no third can arrive
	}
	require.NoError(t, first.Close())
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting connection was not accepted once a slot freed")
	}
	require.NoError(t, ln.Close())
	select {
	case err := <-acceptErr:
		require.True(t, errors.Is(err, net.ErrClosed))
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not release Accept")
	}
	for _, c := range clients {
		c.Close()
	}
}
