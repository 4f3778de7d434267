package store_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

// TestAssignBuildWithOTP: the assignment and its job's one-time password are
// one transaction — the OTP is of the new assignment, redeemable once; an
// assignment refused stores no OTP.
func TestAssignBuildWithOTP(t *testing.T) {
	t.Parallel()
	d := newTestDB(t)
	b := d.build(t, t0)
	w := d.worker(t, "w", t0)
	otp, digest, err := domain.NewToken()
	require.NoError(t, err)
	require.NoError(t, d.s.AssignBuildWithOTP(t.Context(), b, w, t0+10,
		store.TokenGrant{Digest: digest, ExpiresAt: t0 + 600_000}))
	require.Equal(t, domain.StatusAssigned, d.get(t, b).Status)
	require.Equal(t, 1, d.count(t, `SELECT COUNT(*) FROM assignment_tokens WHERE build_id = ? AND kind = 'otp'
		AND assignment = (SELECT assignment FROM builds WHERE id = ?)`, b, b), "the OTP is of the new assignment")

	vm := store.TokenGrant{Digest: domain.Digest("vm-token"), ExpiresAt: t0 + 3_600_000}
	require.NoError(t, d.s.RedeemOTP(t.Context(), b, domain.Digest(otp), vm, t0+20))
	require.ErrorIs(t, d.s.RedeemOTP(t.Context(), b, domain.Digest(otp), vm, t0+30), store.ErrOTPInvalid, "used once")

	// Refused (the worker holds a build now): nothing stored.
	other := d.build(t, t0)
	_, digest2, err := domain.NewToken()
	require.NoError(t, err)
	require.ErrorIs(t, d.s.AssignBuildWithOTP(t.Context(), other, w, t0+40,
		store.TokenGrant{Digest: digest2, ExpiresAt: t0 + 600_000}), store.ErrConflict)
	require.Zero(t, d.count(t, `SELECT COUNT(*) FROM assignment_tokens WHERE build_id = ?`, other))
	require.Equal(t, domain.StatusPending, d.get(t, other).Status)
}
