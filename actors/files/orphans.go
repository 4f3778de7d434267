package files

import (
	"context"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/expo-free-agent/controller/store/domain"
)

// Catalog tells whether a stored file belongs to a build: the database
// refers to it by its path relative to the storage root.
type Catalog interface {
	FileReferenced(ctx context.Context, buildID, rel string) (bool, error)
}

// WithCatalog makes Serve remove, at start, the files that no build refers
// to (see RemoveOrphans). It must be called before anything is written: from
// then until the pass ends, every name this process publishes is claimed.
func (f *Store) WithCatalog(c Catalog) {
	f.catalog = c
	f.orphans.begin()
}

func (p *orphanPass) begin() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		p.running, p.fresh = true, map[string]bool{}
	}
}

func (p *orphanPass) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running, p.fresh = false, nil
}

// orphanPass keeps the orphan pass and this process's own writes apart.
type orphanPass struct {
	mu      sync.Mutex
	running bool
	fresh   map[string]bool // names this process published while the pass runs
}

// claim records, before a name is published, that this process writes it:
// while a pass runs, the pass never removes it (its row may not be committed
// yet). Outside a pass it costs a lock and nothing is kept.
func (f *Store) claim(rel string) {
	f.orphans.mu.Lock()
	defer f.orphans.mu.Unlock()
	if f.orphans.running {
		f.orphans.fresh[rel] = true
	}
}

// RemoveOrphans deletes the stored files that no build refers to and that
// this process did not write — the files of writes a crash (kill -9)
// interrupted between giving a file its final name and committing its row.
// It runs beside live traffic: a name this process publishes while the pass
// runs is claimed first and never removed. It returns how many files it
// removed.
func (f *Store) RemoveOrphans(ctx context.Context, c Catalog) (int, error) {
	f.orphans.begin()
	defer f.orphans.end()
	return f.sweep(func(k Kind, _ string, e os.DirEntry) (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		id, ok := storedID(e.Name())
		if !ok || !e.Type().IsRegular() {
			return false, nil // temporaries and strangers are not ours to judge
		}
		rel := k.dir() + "/" + e.Name()
		if young(c, e) {
			return false, nil
		}
		ref, err := c.FileReferenced(ctx, id, rel)
		if err != nil || ref {
			return false, err
		}
		gone, err := f.removeUnclaimed(rel)
		if gone && err == nil {
			f.log.Info("removed a file no build refers to (an interrupted write)", "file", rel)
		}
		return gone, err
	})
}

// removeUnclaimed deletes rel unless this process claimed it; the check and
// the delete are one step with respect to claim.
func (f *Store) removeUnclaimed(rel string) (bool, error) {
	f.orphans.mu.Lock()
	defer f.orphans.mu.Unlock()
	if f.orphans.fresh[rel] {
		return false, nil
	}
	return true, f.Delete(rel)
}

// SharedOrphanAge is how old a file no build refers to must be before the
// orphan pass removes it when other nodes share the storage root and the
// database (a shared Catalog): younger, it may be another node's write whose
// row is not committed yet. Such writes take seconds; an hour is far beyond.
const SharedOrphanAge = time.Hour

// young reports whether, with a shared catalog, e is too recent to judge.
func young(c Catalog, e os.DirEntry) bool {
	sh, ok := c.(interface{ Shared() bool })
	if !ok || !sh.Shared() {
		return false
	}
	info, err := e.Info()
	return err != nil || time.Since(info.ModTime()) < SharedOrphanAge
}

// storedID returns the build id of a final file name "<uuid>.<ext>".
func storedID(name string) (string, bool) {
	base, ext, _ := strings.Cut(name, ".")
	switch ext {
	case "zip", "ipa", "apk":
	default:
		return "", false
	}
	id, ok := domain.ParseID(base)
	return id, ok && id == base
}
