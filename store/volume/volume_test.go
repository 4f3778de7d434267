package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFree(t *testing.T) {
	t.Parallel()
	n, err := Free(t.TempDir())
	if runtime.GOOS != "linux" {
		require.ErrorIs(t, err, ErrUnsupported)
		return
	}
	require.NoError(t, err)
	require.Positive(t, n, "a temporary directory's volume has room")

	_, err = Free(filepath.Join(t.TempDir(), "missing"))
	var pe *os.PathError
	require.True(t, errors.As(err, &pe), "a missing directory is a path error: %v", err)
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestIsFull(t *testing.T) {
	t.Parallel()
	require.True(t, IsFull(&os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}))
	require.True(t, IsFull(fmt.Errorf("fsync: %w", syscall.EDQUOT)))
	require.False(t, IsFull(&os.PathError{Op: "write", Path: "x", Err: syscall.EIO}))
	require.False(t, IsFull(errors.New("no space left on device")), "only the errno counts, not a text")
}
