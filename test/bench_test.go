package test

import (
	"fmt"
	"net/http"
	"testing"
)

// BenchmarkUpload is the whole upload path over HTTP: multipart parsing,
// checks, streaming to a temporary file with SHA-256, fsync, rename and the
// completing transaction. Each iteration uploads one build's result.
func BenchmarkUpload(b *testing.B) {
	for _, size := range []int64{64 << 10, 8 << 20, 64 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			c := Start(b)
			w := c.Register("bench")
			for i := 0; i < b.N; i++ {
				c.Submit("ios", []byte("s"), nil)
			}
			b.SetBytes(size)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				job := c.Poll(w)
				if job == nil {
					b.Fatal("no job")
				}
				if code := streamUpload(c.URL, job["id"].(string), w, size, uint64(i), nil); code != http.StatusOK {
					b.Fatalf("upload: %d", code)
				}
			}
		})
	}
}

// BenchmarkSubmit is the whole submit path over HTTP with a 1 MiB source.
func BenchmarkSubmit(b *testing.B) {
	c := Start(b)
	src := make([]byte, 1<<20)
	parts := []Part{{Name: "source", Filename: "s.zip", Data: src}, {Name: "platform", Data: []byte("ios")}}
	b.SetBytes(int64(len(src)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := c.PostMultipart("/api/builds/submit", c.KeyH(), parts...); r.Status != http.StatusOK {
			b.Fatalf("submit: %d", r.Status)
		}
	}
}
