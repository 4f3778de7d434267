package store_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves a goroutine behind (an unclosed
// connection pool, a context watcher of the driver).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
