// Package testkit holds small helpers that tests of several packages share.
// Only tests import it.
package testkit

import (
	"bytes"
	"sync"
)

// LockedBuffer is a bytes.Buffer safe for a goroutine that writes (a
// logger, a worker's console) and a test that reads it meanwhile.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
