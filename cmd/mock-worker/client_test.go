package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestResolveURL(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, base, ref, want string
	}{
		{"RelativePath", "http://localhost:3000", "/api/builds/abc/source", "http://localhost:3000/api/builds/abc/source"},
		{"BaseWithSlash", "http://localhost:3000/", "/api/builds/abc/source", "http://localhost:3000/api/builds/abc/source"},
		{"BaseWithPrefix", "https://example.com/ci", "/api/builds/abc/source", "https://example.com/ci/api/builds/abc/source"},
		{"NoLeadingSlash", "http://h:1", "api/workers/poll?worker_id=x", "http://h:1/api/workers/poll?worker_id=x"},
		{"Query", "http://h:1", "/api/builds/a/heartbeat?worker_id=w", "http://h:1/api/builds/a/heartbeat?worker_id=w"},
		{"Absolute", "http://localhost:3000", "https://cdn.example.com/src/abc.zip?sig=1", "https://cdn.example.com/src/abc.zip?sig=1"},
		{"AbsoluteHTTP", "https://c", "http://other:8080/x", "http://other:8080/x"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := resolveURL(tc.base, tc.ref)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	for name, ref := range map[string]string{"Empty": "", "FTP": "ftp://h/x", "SchemeRelative": "//evil/x", "NoHost": "http:///x"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := resolveURL("http://localhost:3000", ref)
			require.Error(t, err)
		})
	}
}
