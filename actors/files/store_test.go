package files

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/expo-free-agent/controller/store/domain"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

func newTestFileStore(t *testing.T, fsys FS) *Store {
	t.Helper()
	f, err := New(filepath.Join(t.TempDir(), "storage"), fsys, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	return f
}

// listFiles returns every non-directory entry under root (temporary files
// included), relative to root and sorted.
func listFiles(t *testing.T, root string) []string {
	t.Helper()
	out := []string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	require.NoError(t, err)
	sort.Strings(out)
	return out
}

// stream is a deterministic pseudo-random byte stream of a given length,
// produced on the fly: a multi-MiB upload without a multi-MiB slice. It
// records the largest read it was asked for.
type stream struct {
	r       io.Reader
	maxRead int
}

func newStream(seed byte, size int64) *stream {
	var key [32]byte
	key[0] = seed
	return &stream{r: io.LimitReader(rand.NewChaCha8(key), size)}
}

func (s *stream) Read(p []byte) (int, error) {
	s.maxRead = max(s.maxRead, len(p))
	return s.r.Read(p)
}

func streamSHA256(t *testing.T, seed byte, size int64) string {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, newStream(seed, size))
	require.NoError(t, err)
	require.Equal(t, size, n)
	return hex.EncodeToString(h.Sum(nil))
}

// requireSameStream compares two readers chunk by chunk.
func requireSameStream(t *testing.T, want, got io.Reader) {
	t.Helper()
	a, b := make([]byte, ChunkSize), make([]byte, ChunkSize)
	var off int64
	for {
		n, errA := io.ReadFull(want, a)
		m, errB := io.ReadFull(got, b)
		require.Equal(t, n, m, "length differs near offset %d", off)
		require.True(t, bytes.Equal(a[:n], b[:m]), "content differs near offset %d", off)
		off += int64(n)
		if errA == io.EOF || errA == io.ErrUnexpectedEOF {
			require.True(t, errB == io.EOF || errB == io.ErrUnexpectedEOF, "got is longer than want")
			return
		}
		require.NoError(t, errA)
		require.NoError(t, errB)
	}
}

func readStored(t *testing.T, f *Store, rel string) []byte {
	t.Helper()
	fh, size, err := f.Open(rel)
	require.NoError(t, err)
	defer fh.Close()
	b, err := io.ReadAll(fh)
	require.NoError(t, err)
	require.Equal(t, size, int64(len(b)))
	return b
}

func TestNewFileStore(t *testing.T) {
	t.Parallel()

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		f := newTestFileStore(t, nil)
		require.True(t, filepath.IsAbs(f.Root()))
		for _, dir := range []string{"builds", "certs", "results"} {
			st, err := os.Stat(filepath.Join(f.Root(), dir))
			require.NoError(t, err)
			require.True(t, st.IsDir())
		}
		require.Equal(t, "file-storage", f.String())
	})

	t.Run("RootIsAFile", func(t *testing.T) {
		t.Parallel()
		file := filepath.Join(t.TempDir(), "file")
		require.NoError(t, os.WriteFile(file, nil, 0o600))
		_, err := New(file, nil, slog.New(slog.DiscardHandler))
		require.Error(t, err)
	})
}

func TestStageCommitRoundTrip(t *testing.T) {
	t.Parallel()
	const size = 5<<20 + 12345                       // several MiB, not a multiple of the chunk
	f := newTestFileStore(t, OSFS{NamedTemps: true}) // named temporaries are visible
	id := uuid.NewString()

	src := newStream(7, size)
	var progress []int64
	st, err := f.Stage(KindResult, src, 1<<30, func(n int64) { progress = append(progress, n) })
	require.NoError(t, err)
	require.LessOrEqual(t, src.maxRead, ChunkSize, "read through a bounded buffer")
	require.Equal(t, int64(size), st.Size)
	require.Equal(t, streamSHA256(t, 7, size), st.SHA256)
	require.NotEmpty(t, progress)
	require.Equal(t, int64(size), progress[len(progress)-1])
	for i := 1; i < len(progress); i++ {
		require.Greater(t, progress[i], progress[i-1])
		require.LessOrEqual(t, progress[i]-progress[i-1], int64(ChunkSize))
	}

	files := listFiles(t, f.Root())
	require.Len(t, files, 1)
	require.True(t, strings.HasPrefix(files[0], "results/.tmp-"), "staged as a temporary file: %v", files)

	rel, err := st.Commit(id, ".ipa")
	require.NoError(t, err)
	require.Equal(t, "results/"+id+".ipa", rel)
	require.Equal(t, []string{rel}, listFiles(t, f.Root()), "the temporary file became the final one")
	st.Discard() // after a commit: nothing happens
	require.Equal(t, []string{rel}, listFiles(t, f.Root()))

	fh, n, err := f.Open(rel)
	require.NoError(t, err)
	defer fh.Close()
	require.Equal(t, int64(size), n)
	requireSameStream(t, newStream(7, size), fh)
}

func TestSave(t *testing.T) {
	t.Parallel()
	f := newTestFileStore(t, nil)
	kinds := []struct {
		kind Kind
		ext  string
		dir  string
	}{
		{KindSource, ".zip", "builds"},
		{KindCerts, ".zip", "certs"},
		{KindResult, ".ipa", "results"},
		{KindResult, ".apk", "results"},
	}
	for _, k := range kinds {
		t.Run(k.dir+k.ext+"/OK", func(t *testing.T) {
			t.Parallel()
			id := uuid.NewString()
			body := []byte("content of " + id)
			rel, st, err := f.Save(k.kind, id, k.ext, bytes.NewReader(body), int64(len(body)))
			require.NoError(t, err)
			require.Equal(t, k.dir+"/"+id+k.ext, rel)
			require.Equal(t, int64(len(body)), st.Size)
			sum := sha256.Sum256(body)
			require.Equal(t, hex.EncodeToString(sum[:]), st.SHA256)
			require.Equal(t, body, readStored(t, f, rel))
		})
	}

	t.Run("Empty/OK", func(t *testing.T) {
		t.Parallel()
		id := uuid.NewString()
		rel, st, err := f.Save(KindSource, id, ".zip", strings.NewReader(""), 10)
		require.NoError(t, err)
		require.Zero(t, st.Size)
		require.Equal(t, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", st.SHA256)
		require.Empty(t, readStored(t, f, rel))
	})
}

func TestStageLimit(t *testing.T) {
	t.Parallel()
	const limit = 3*ChunkSize + 17
	cases := []struct {
		name    string
		size    int64
		wantErr error
	}{
		{"BelowLimit/OK", limit - 1, nil},
		{"AtLimit/OK", limit, nil},
		{"OverByOne/TooLarge", limit + 1, ErrTooLarge},
		{"FarOver/TooLarge", 10 * limit, ErrTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newTestFileStore(t, nil)
			id := uuid.NewString()
			rel, st, err := f.Save(KindSource, id, ".zip", newStream(3, tc.size), limit)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				require.Empty(t, rel)
				require.Nil(t, st)
				require.Empty(t, listFiles(t, f.Root()), "an oversize write leaves nothing, temporary files included")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.size, st.Size)
			require.Equal(t, []string{rel}, listFiles(t, f.Root()))
			fh, _, err := f.Open(rel)
			require.NoError(t, err)
			defer fh.Close()
			requireSameStream(t, newStream(3, tc.size), fh)
		})
	}

	t.Run("ZeroLimit", func(t *testing.T) {
		t.Parallel()
		f := newTestFileStore(t, nil)
		_, err := f.Stage(KindCerts, strings.NewReader("x"), 0, nil)
		require.ErrorIs(t, err, ErrTooLarge)
		require.Empty(t, listFiles(t, f.Root()))
	})
}

var errConnectionReset = errors.New("connection reset by peer")

// brokenReader delivers n bytes of a stream, then fails like a dropped upload.
type brokenReader struct {
	r   io.Reader
	err error
}

func (b *brokenReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		return n, b.err
	}
	return n, err
}

func TestStageInterrupted(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		sent int64
	}{
		{"Immediately", 0},
		{"MidChunk", ChunkSize / 2},
		{"AfterSeveralChunks", 5*ChunkSize + 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newTestFileStore(t, nil)
			r := &brokenReader{r: newStream(9, tc.sent), err: errConnectionReset}
			st, err := f.Stage(KindSource, r, 1<<30, nil)
			require.ErrorIs(t, err, errConnectionReset)
			require.Nil(t, st)
			require.Empty(t, listFiles(t, f.Root()), "an interrupted upload leaves nothing")
		})
	}
}

func TestRelPath(t *testing.T) {
	t.Parallel()
	id := uuid.NewString()
	ok := []struct {
		kind Kind
		ext  string
		want string
	}{
		{KindSource, ".zip", "builds/" + id + ".zip"},
		{KindCerts, ".zip", "certs/" + id + ".zip"},
		{KindResult, ".ipa", "results/" + id + ".ipa"},
		{KindResult, ".apk", "results/" + id + ".apk"},
	}
	for _, tc := range ok {
		t.Run("OK/"+tc.want, func(t *testing.T) {
			t.Parallel()
			got, err := RelPath(tc.kind, id, tc.ext)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	bad := []struct{ name, id, ext string }{
		{"EmptyID", "", ".zip"},
		{"Traversal", "../../etc/passwd", ".zip"},
		{"PercentEncoded", "%2e%2e%2f", ".zip"},
		{"UppercaseUUID", strings.ToUpper(id), ".zip"},
		{"Braces", "{" + id + "}", ".zip"},
		{"NoHyphens", strings.ReplaceAll(id, "-", ""), ".zip"},
		{"TrailingSlash", id + "/", ".zip"},
		{"LongID", strings.Repeat("a", 300), ".zip"},
		{"EmptyExt", id, ""},
		{"ExtWithoutDot", id, "zip"},
		{"UnknownExt", id, ".exe"},
		{"ExtTraversal", id, ".zip/../../x"},
		{"UppercaseExt", id, ".ZIP"},
	}
	for _, tc := range bad {
		t.Run("BadPath/"+tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := RelPath(KindSource, tc.id, tc.ext)
			require.ErrorIs(t, err, ErrBadPath)
			require.Empty(t, got)
		})
	}
}

func TestOpen(t *testing.T) {
	t.Parallel()
	f := newTestFileStore(t, nil)
	// Secrets next to (and with a name sharing the prefix of) the root.
	parent := filepath.Dir(f.Root())
	require.NoError(t, os.WriteFile(filepath.Join(parent, "x"), []byte("outside"), 0o600))
	require.NoError(t, os.MkdirAll(filepath.Join(parent, "storage-evil"), 0o750))
	require.NoError(t, os.WriteFile(filepath.Join(parent, "storage-evil", "f"), []byte("outside"), 0o600))
	id := uuid.NewString()
	rel, _, err := f.Save(KindSource, id, ".zip", strings.NewReader("zip bytes"), 100)
	require.NoError(t, err)

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, []byte("zip bytes"), readStored(t, f, rel))
	})

	t.Run("CleanedInsideRoot/OK", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, []byte("zip bytes"), readStored(t, f, "certs/../"+rel))
	})

	traversal := []struct{ name, rel string }{
		{"Empty", ""},
		{"Dot", "."},
		{"Parent", "../x"},
		{"Absolute", "/etc/passwd"},
		{"AbsoluteIntoRoot", filepath.Join(f.Root(), rel)},
		{"EscapesThroughDir", "builds/../../x"},
		{"DeepEscape", "builds/../../../../../../etc/passwd"},
		{"SiblingWithSamePrefix", "../storage-evil/f"},
		{"Backslash", `builds\` + id + ".zip"},
		{"BackslashTraversal", `..\x`},
	}
	for _, tc := range traversal {
		t.Run("BadPath/"+tc.name, func(t *testing.T) {
			t.Parallel()
			fh, size, err := f.Open(tc.rel)
			require.ErrorIs(t, err, ErrBadPath)
			require.Nil(t, fh)
			require.Zero(t, size)
			require.ErrorIs(t, f.Delete(tc.rel), ErrBadPath)
		})
	}
	// Delete refused all of them: the files outside the root are still there.
	t.Cleanup(func() {
		_, err := os.Stat(filepath.Join(parent, "x"))
		require.NoError(t, err)
		_, err = os.Stat(filepath.Join(parent, "storage-evil", "f"))
		require.NoError(t, err)
	})

	notFound := []struct{ name, rel string }{
		{"Missing", "builds/" + uuid.NewString() + ".zip"},
		{"MissingDir", "nowhere/" + id + ".zip"},
		{"Directory", "builds"},
	}
	for _, tc := range notFound {
		t.Run("FileNotFound/"+tc.name, func(t *testing.T) {
			t.Parallel()
			fh, _, err := f.Open(tc.rel)
			require.ErrorIs(t, err, ErrFileNotFound)
			require.Nil(t, fh)
		})
	}
}

func TestCopy(t *testing.T) {
	t.Parallel()

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		f := newTestFileStore(t, nil)
		const size = 2<<20 + 1
		src, _, err := f.Save(KindSource, uuid.NewString(), ".zip", newStream(5, size), size)
		require.NoError(t, err)
		dstID := uuid.NewString()
		dst, err := f.Copy(src, KindSource, dstID, ".zip")
		require.NoError(t, err)
		require.Equal(t, "builds/"+dstID+".zip", dst)

		fh, n, err := f.Open(dst)
		require.NoError(t, err)
		defer fh.Close()
		require.Equal(t, int64(size), n)
		requireSameStream(t, newStream(5, size), fh)
		require.ElementsMatch(t, []string{src, dst}, listFiles(t, f.Root()), "the original stays")
	})

	t.Run("AcrossKinds/OK", func(t *testing.T) {
		t.Parallel()
		f := newTestFileStore(t, nil)
		src, _, err := f.Save(KindCerts, uuid.NewString(), ".zip", strings.NewReader("certs"), 100)
		require.NoError(t, err)
		dstID := uuid.NewString()
		dst, err := f.Copy(src, KindCerts, dstID, ".zip")
		require.NoError(t, err)
		require.Equal(t, "certs/"+dstID+".zip", dst)
		require.Equal(t, []byte("certs"), readStored(t, f, dst))
	})

	// Copy and Link refuse the same inputs and leave nothing behind.
	for _, op := range []struct {
		name string
		do   func(f *Store) func(srcRel string, kind Kind, id, ext string) (string, error)
	}{{"Copy", func(f *Store) func(string, Kind, string, string) (string, error) { return f.Copy }},
		{"Link", func(f *Store) func(string, Kind, string, string) (string, error) { return f.Link }}} {
		t.Run(op.name+"/Missing/FileNotFound", func(t *testing.T) {
			t.Parallel()
			f := newTestFileStore(t, nil)
			_, err := op.do(f)("builds/"+uuid.NewString()+".zip", KindSource, uuid.NewString(), ".zip")
			require.ErrorIs(t, err, ErrFileNotFound)
			require.Empty(t, listFiles(t, f.Root()))
		})
		t.Run(op.name+"/BadSource/BadPath", func(t *testing.T) {
			t.Parallel()
			f := newTestFileStore(t, nil)
			_, err := op.do(f)("../../etc/passwd", KindSource, uuid.NewString(), ".zip")
			require.ErrorIs(t, err, ErrBadPath)
			require.Empty(t, listFiles(t, f.Root()))
		})
		t.Run(op.name+"/BadTarget/BadPath", func(t *testing.T) {
			t.Parallel()
			f := newTestFileStore(t, nil)
			src, _, err := f.Save(KindSource, uuid.NewString(), ".zip", strings.NewReader("zip"), 100)
			require.NoError(t, err)
			_, err = op.do(f)(src, KindSource, "../evil", ".zip")
			require.ErrorIs(t, err, ErrBadPath)
			require.Equal(t, []string{src}, listFiles(t, f.Root()), "no temporary file is left")
		})
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		f := newTestFileStore(t, nil)
		rel, _, err := f.Save(KindResult, uuid.NewString(), ".apk", strings.NewReader("apk"), 100)
		require.NoError(t, err)
		require.NoError(t, f.Delete(rel))
		require.Empty(t, listFiles(t, f.Root()))
		_, _, err = f.Open(rel)
		require.ErrorIs(t, err, ErrFileNotFound)
	})

	t.Run("Missing/OK", func(t *testing.T) {
		t.Parallel()
		f := newTestFileStore(t, nil)
		require.NoError(t, f.Delete("results/"+uuid.NewString()+".apk"))
	})
}

func TestCommitAndDiscard(t *testing.T) {
	t.Parallel()

	t.Run("BadID/BadPath", func(t *testing.T) {
		t.Parallel()
		f := newTestFileStore(t, nil)
		st, err := f.Stage(KindSource, strings.NewReader("zip"), 100, nil)
		require.NoError(t, err)
		_, err = st.Commit("../../x", ".zip")
		require.ErrorIs(t, err, ErrBadPath)
		require.Empty(t, listFiles(t, f.Root()), "a refused commit removes the temporary file")
	})

	t.Run("BadExt/BadPath", func(t *testing.T) {
		t.Parallel()
		f := newTestFileStore(t, nil)
		st, err := f.Stage(KindSource, strings.NewReader("zip"), 100, nil)
		require.NoError(t, err)
		_, err = st.Commit(uuid.NewString(), ".sh")
		require.ErrorIs(t, err, ErrBadPath)
		require.Empty(t, listFiles(t, f.Root()))
	})

	t.Run("Discard/Idempotent", func(t *testing.T) {
		t.Parallel()
		f := newTestFileStore(t, OSFS{NamedTemps: true}) // named temporaries are visible
		st, err := f.Stage(KindCerts, strings.NewReader("certs"), 100, nil)
		require.NoError(t, err)
		require.Len(t, listFiles(t, f.Root()), 1)
		st.Discard()
		st.Discard()
		require.Empty(t, listFiles(t, f.Root()))
		var nilStaged *Staged
		nilStaged.Discard()
	})

	t.Run("CommitTwice/SecondFails", func(t *testing.T) {
		t.Parallel()
		f := newTestFileStore(t, nil)
		st, err := f.Stage(KindSource, strings.NewReader("zip"), 100, nil)
		require.NoError(t, err)
		id := uuid.NewString()
		rel, err := st.Commit(id, ".zip")
		require.NoError(t, err)
		_, err = st.Commit(uuid.NewString(), ".zip")
		require.Error(t, err)
		require.Equal(t, []string{rel}, listFiles(t, f.Root()))
	})

	t.Run("Concurrent/OK", func(t *testing.T) {
		t.Parallel()
		f := newTestFileStore(t, nil)
		const n = 8
		rels := make([]string, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				rels[i], _, errs[i] = f.Save(KindResult, uuid.NewString(), ".ipa", newStream(byte(i), 200_000), 1<<20)
			})
		}
		wg.Wait()
		for i := range n {
			require.NoError(t, errs[i])
			fh, _, err := f.Open(rels[i])
			require.NoError(t, err)
			requireSameStream(t, newStream(byte(i), 200_000), fh)
			require.NoError(t, fh.Close())
		}
		require.Len(t, listFiles(t, f.Root()), n)
	})
}

func TestRemoveStaleTemps(t *testing.T) {
	t.Parallel()
	f := newTestFileStore(t, OSFS{NamedTemps: true}) // named temporaries are visible
	stale := []string{
		"builds/.tmp-deadbeef0000-123",
		"certs/.tmp-deadbeef0000-456",
		"results/.tmp-0123456789ab-probe-1",
	}
	for _, rel := range stale {
		require.NoError(t, os.WriteFile(filepath.Join(f.Root(), rel), []byte("half a file"), 0o600))
	}
	kept, _, err := f.Save(KindSource, uuid.NewString(), ".zip", strings.NewReader("zip"), 100)
	require.NoError(t, err)
	notTemp := "builds/notes.tmp"
	require.NoError(t, os.WriteFile(filepath.Join(f.Root(), notTemp), nil, 0o600))

	// An upload of this process is in flight.
	inFlight, err := f.Stage(KindSource, strings.NewReader("in flight"), 100, nil)
	require.NoError(t, err)

	n, err := f.RemoveStaleTemps()
	require.NoError(t, err)
	require.Equal(t, len(stale), n)
	files := listFiles(t, f.Root())
	require.Len(t, files, 3)
	require.Contains(t, files, kept)
	require.Contains(t, files, notTemp)

	id := uuid.NewString()
	rel, err := inFlight.Commit(id, ".zip")
	require.NoError(t, err, "the in-flight temporary file survived")
	require.Equal(t, []byte("in flight"), readStored(t, f, rel))

	n, err = f.RemoveStaleTemps()
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestServeRemovesStaleTemps(t *testing.T) {
	t.Parallel()
	f := newTestFileStore(t, nil)
	require.NoError(t, os.WriteFile(filepath.Join(f.Root(), "builds", ".tmp-deadbeef0000-123"), nil, 0o600))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.ErrorIs(t, f.Serve(ctx), context.Canceled)
	require.Empty(t, listFiles(t, f.Root()))
}

func TestCheckWritable(t *testing.T) {
	t.Parallel()

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		f := newTestFileStore(t, nil)
		require.NoError(t, f.CheckWritable())
		require.Empty(t, listFiles(t, f.Root()), "the probe is removed")
	})

	t.Run("RootMissing", func(t *testing.T) {
		t.Parallel()
		f := newTestFileStore(t, nil)
		require.NoError(t, os.RemoveAll(f.Root()))
		require.Error(t, f.CheckWritable())
	})
}

// faultFS is the real file system with injectable failures.
type faultFS struct {
	OSFS
	createErr  error
	writeErr   error
	writeAfter int64 // bytes accepted before writeErr
	syncErr    error
	renameErr  error
	dirSyncErr error
}

func (f *faultFS) SyncDir(name string) error {
	if f.dirSyncErr != nil {
		return f.dirSyncErr
	}
	return f.OSFS.SyncDir(name)
}

func (f *faultFS) CreateTemp(dir, pattern string) (TempFile, error) {
	if f.createErr != nil {
		return nil, f.createErr
	}
	fh, err := f.OSFS.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return &faultFile{TempFile: fh, fs: f}, nil
}

type faultFile struct {
	TempFile
	fs      *faultFS
	written int64
}

func (f *faultFile) Write(p []byte) (int, error) {
	if f.fs.writeErr != nil && f.written+int64(len(p)) > f.fs.writeAfter {
		ok := max(f.fs.writeAfter-f.written, 0)
		n, _ := f.TempFile.Write(p[:ok])
		f.written += int64(n)
		return n, f.fs.writeErr
	}
	n, err := f.TempFile.Write(p)
	f.written += int64(n)
	return n, err
}

func (f *faultFile) Sync() error {
	if f.fs.syncErr != nil {
		return f.fs.syncErr
	}
	return f.TempFile.Sync()
}

// Publish is where a rename (or link) would fail.
func (f *faultFile) Publish(path string) error {
	if f.fs.renameErr != nil {
		return f.fs.renameErr
	}
	return f.TempFile.Publish(path)
}

var (
	errDiskFull = errors.New("no space left on device")
	errIO       = errors.New("input/output error")
)

func TestFaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		fs      *faultFS
		wantErr error
	}{
		{"CreateFails", &faultFS{createErr: errDiskFull}, errDiskFull},
		{"FirstWriteFails", &faultFS{writeErr: errDiskFull}, errDiskFull},
		{"WriteFailsMidStream", &faultFS{writeErr: errDiskFull, writeAfter: 2*ChunkSize + 100}, errDiskFull},
		{"SyncFails", &faultFS{syncErr: errIO}, errIO},
		{"RenameFails", &faultFS{renameErr: errIO}, errIO},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newTestFileStore(t, tc.fs)
			id := uuid.NewString()
			rel, _, err := f.Save(KindResult, id, ".ipa", newStream(1, 4*ChunkSize), 1<<20)
			require.ErrorIs(t, err, tc.wantErr)
			require.Empty(t, rel)
			require.Empty(t, listFiles(t, f.Root()), "a failed write leaves nothing")
			_, _, err = f.Open("results/" + id + ".ipa")
			require.ErrorIs(t, err, ErrFileNotFound)
		})
	}

	t.Run("StageOK/RenameFails", func(t *testing.T) {
		t.Parallel()
		fsys := &faultFS{}
		f := newTestFileStore(t, fsys)
		st, err := f.Stage(KindSource, strings.NewReader("zip"), 100, nil)
		require.NoError(t, err, "staging works")
		fsys.renameErr = errIO // the disk breaks between staging and commit
		_, err = st.Commit(uuid.NewString(), ".zip")
		require.ErrorIs(t, err, errIO)
		require.Empty(t, listFiles(t, f.Root()))
	})

	t.Run("CopyWriteFails", func(t *testing.T) {
		t.Parallel()
		fsys := &faultFS{}
		f := newTestFileStore(t, fsys)
		src, _, err := f.Save(KindSource, uuid.NewString(), ".zip", newStream(2, 3*ChunkSize), 1<<20)
		require.NoError(t, err)
		fsys.writeErr, fsys.writeAfter = errDiskFull, ChunkSize
		_, err = f.Copy(src, KindSource, uuid.NewString(), ".zip")
		require.ErrorIs(t, err, errDiskFull)
		require.Equal(t, []string{src}, listFiles(t, f.Root()))
	})

	t.Run("CheckWritableCreateFails", func(t *testing.T) {
		t.Parallel()
		fsys := &faultFS{}
		f := newTestFileStore(t, fsys)
		fsys.createErr = errDiskFull
		require.ErrorIs(t, f.CheckWritable(), errDiskFull)
	})

	t.Run("CheckWritableWriteFails", func(t *testing.T) {
		t.Parallel()
		fsys := &faultFS{}
		f := newTestFileStore(t, fsys)
		fsys.writeErr = errDiskFull
		require.ErrorIs(t, f.CheckWritable(), errDiskFull)
		require.Empty(t, listFiles(t, f.Root()), "the probe is removed even then")
	})
}

func ExampleRelPath() {
	rel, err := RelPath(KindResult, "0f8fad5b-d9cb-469f-a165-70867728950e", domain.PlatformAndroid.ResultExt())
	fmt.Println(rel, err)
	_, err = RelPath(KindResult, "../../etc/passwd", ".apk")
	fmt.Println(err)
	// Output:
	// results/0f8fad5b-d9cb-469f-a165-70867728950e.apk <nil>
	// files: invalid path
}

// TestCommitDirSyncFailureLeavesNothing: if the directory cannot be synced
// after the rename, the rename may not survive a power loss, so the commit
// fails and the renamed file is removed again (regression: it was left under
// its final name while the caller was told the write failed).
func TestCommitDirSyncFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	fsys := &faultFS{dirSyncErr: errIO}
	f := newTestFileStore(t, fsys)
	id := "6f1c1f52-4b8e-4f6a-9d3a-0c2b1e7d9a10"
	rel, _, err := f.Save(KindSource, id, ".zip", strings.NewReader("data"), 100)
	require.ErrorIs(t, err, errIO)
	require.Empty(t, rel)
	entries, err := os.ReadDir(filepath.Join(f.Root(), "builds"))
	require.NoError(t, err)
	require.Empty(t, entries)
}

// TestUnnamedTemporaries: where the OS offers them (Linux O_TMPFILE), a
// staged file has no name until it is committed, so nothing is visible while
// it is written and a discard or a crash leaves nothing; committing over an
// earlier attempt's leftover replaces it.
func TestUnnamedTemporaries(t *testing.T) {
	t.Parallel()
	f := newTestFileStore(t, nil)
	probe, err := OSFS{}.CreateTemp(filepath.Join(f.Root(), "builds"), ".tmp-probe-*")
	require.NoError(t, err)
	_, unnamed := probe.(*namedTemp)
	require.NoError(t, probe.Close())
	if unnamed {
		t.Skip("this OS or file system has no unnamed temporary files; the named path is tested elsewhere")
	}
	require.Empty(t, listFiles(t, f.Root()), "a closed, unpublished temporary leaves nothing")

	st, err := f.Stage(KindResult, strings.NewReader("first"), 100, nil)
	require.NoError(t, err)
	require.Empty(t, listFiles(t, f.Root()), "invisible while staged")
	st.Discard()
	require.Empty(t, listFiles(t, f.Root()))

	id := uuid.NewString()
	require.NoError(t, os.WriteFile(filepath.Join(f.Root(), "results", id+".ipa"), []byte("leftover"), 0o600))
	st, err = f.Stage(KindResult, strings.NewReader("second"), 100, nil)
	require.NoError(t, err)
	rel, err := st.Commit(id, ".ipa")
	require.NoError(t, err)
	require.Equal(t, []byte("second"), readStored(t, f, rel))
	require.Equal(t, []string{rel}, listFiles(t, f.Root()), "replaced, no temporary left")
}
