package webhooks

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves a goroutine behind (an attempt, a
// kept-alive connection).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
