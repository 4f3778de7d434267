package retention_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/expo-free-agent/controller/internal/testkit"
)

// TestMain fails the run if a test leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testkit.LeakOptions()...)
}
