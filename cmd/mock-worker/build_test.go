package main

import (
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCertsValidate(t *testing.T) {
	t.Parallel()
	s := func(v string) *string { return &v }
	profiles := func(v ...string) *[]string { return &v }
	ok := certsBundle{P12: s("cDEy"), P12Password: s("not base64!"), KeychainPassword: s("a2M="), ProvisioningProfiles: profiles("cHA=")}
	n, err := ok.validate()
	require.NoError(t, err)
	require.Equal(t, 3, n)

	empty := ok
	empty.P12Password, empty.ProvisioningProfiles = s(""), profiles()
	_, err = empty.validate()
	require.NoError(t, err, `"" and [] pass`)

	for name, mutate := range map[string]func(*certsBundle){
		"NoP12":       func(c *certsBundle) { c.P12 = nil },
		"EmptyP12":    func(c *certsBundle) { c.P12 = s("") },
		"BadP12":      func(c *certsBundle) { c.P12 = s("***") },
		"NoPassword":  func(c *certsBundle) { c.P12Password = nil },
		"NoKeychain":  func(c *certsBundle) { c.KeychainPassword = nil },
		"BadKeychain": func(c *certsBundle) { c.KeychainPassword = s("%%") },
		"NoProfiles":  func(c *certsBundle) { c.ProvisioningProfiles = nil },
		"BadProfile":  func(c *certsBundle) { c.ProvisioningProfiles = profiles("cHA=", "?") },
	} {
		c := ok
		mutate(&c)
		_, err := c.validate()
		require.Error(t, err, name)
	}
}

func TestBuildScript(t *testing.T) {
	t.Parallel()
	for _, platform := range []string{"ios", "android"} {
		ok, msg := buildScript(platform, 1<<20, false, true, 1<<20)
		require.Empty(t, msg)
		require.Greater(t, len(ok), 10)
		for _, l := range ok {
			require.Contains(t, []string{"info", "warn"}, l.Level)
			require.NotEmpty(t, l.Message)
			require.NotEmpty(t, l.stage)
		}
		bad, msg := buildScript(platform, 1<<20, false, false, 1<<20)
		require.NotEmpty(t, msg)
		require.Equal(t, "error", bad[len(bad)-1].Level)
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	w := newWorker(Config{PollInterval: 10 * time.Millisecond}, io.Discard)
	require.Equal(t, 10*time.Millisecond, w.backoff(1))
	require.Equal(t, 20*time.Millisecond, w.backoff(2))
	require.Equal(t, 40*time.Millisecond, w.backoff(3))
	require.Equal(t, maxBackoff, w.backoff(100))
	slow := newWorker(Config{PollInterval: 2 * time.Minute}, io.Discard)
	require.Equal(t, 2*time.Minute, slow.backoff(5), "never below the poll interval")
}
