package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/expo-free-agent/controller/actors/files"
	"github.com/expo-free-agent/controller/store"
	"github.com/expo-free-agent/controller/store/domain"
)

var (
	// ErrNotFinished means a retry named a build that is still pending or
	// running.
	ErrNotFinished = errors.New("queue: build is still in progress")
	// ErrFilesGone means a retry's original build has lost its source or
	// certs file.
	ErrFilesGone = errors.New("queue: original build files are gone")
)

// Submission is a new build: its platform and its staged files.
type Submission struct {
	Platform domain.Platform
	Source   *files.Staged // required
	Certs    *files.Staged // nil when the build has no certs
}

// Submitted is a build that was created: durable and queued.
type Submitted struct {
	ID              string
	Token           string // the build access token; only its digest is stored
	SubmittedAt     int64
	OriginalBuildID string // set for a retry
}

// Submit creates a build (docs/API.md §2.1): it mints the id and the access
// token, gives the staged files their final names, commits the pending row
// and queues it. The files and the row are made durable in the caller's
// goroutine (the manager's goroutine never waits for an fsync); if anything
// fails, the files placed so far are removed and nothing is queued. The
// staged files are always consumed. It returns the store's errors or the
// file commit's.
func (m *Manager) Submit(ctx context.Context, sub Submission) (Submitted, error) {
	defer func() { sub.Source.Discard(); sub.Certs.Discard() }() // no-ops once committed
	return m.create(ctx, sub.Platform, nil, func(id string) (string, *string, error) {
		src, err := sub.Source.Commit(id, ".zip")
		if err != nil || sub.Certs == nil {
			return src, nil, err
		}
		crt, err := sub.Certs.Commit(id, ".zip")
		return src, &crt, err
	})
}

// Retry creates a new pending build with copies of a finished build's source
// and certs (docs/API.md §2.8). It returns store.ErrNotFound, ErrNotFinished,
// ErrFilesGone when a file of the original is missing, or the store's and
// the file store's errors.
func (m *Manager) Retry(ctx context.Context, originalID string) (Submitted, error) {
	orig, err := m.store.GetBuild(ctx, originalID)
	if err != nil {
		return Submitted{}, err
	}
	if !orig.Finished() {
		return Submitted{}, ErrNotFinished
	}
	return m.create(ctx, orig.Platform, &orig.ID, func(id string) (string, *string, error) {
		src, err := m.copyFile(orig.SourcePath, files.KindSource, id)
		if err != nil || orig.CertsPath == nil {
			return src, nil, err
		}
		crt, err := m.copyFile(*orig.CertsPath, files.KindCerts, id)
		return src, &crt, err
	})
}

func (m *Manager) copyFile(rel string, kind files.Kind, id string) (string, error) {
	out, err := m.files.Copy(rel, kind, id, ".zip")
	if errors.Is(err, files.ErrFileNotFound) || errors.Is(err, files.ErrBadPath) {
		return "", fmt.Errorf("%w: %v", ErrFilesGone, err)
	}
	return out, err
}

// create is a build's birth: mint id and token, place the files (place
// returns their paths), commit the row, queue it; on failure remove what was
// placed.
func (m *Manager) create(ctx context.Context, p domain.Platform, original *string, place func(id string) (string, *string, error)) (Submitted, error) {
	id := uuid.NewString()
	token, digest, err := domain.NewToken()
	if err != nil {
		return Submitted{}, err
	}
	src, crt, err := place(id)
	nb := store.NewBuild{ID: id, Platform: p, SubmittedAt: m.now(), SourcePath: src,
		CertsPath: crt, TokenHash: digest, OriginalBuildID: original}
	if err == nil {
		err = m.store.CreateBuild(ctx, nb) // durable when it returns
	}
	if err != nil {
		for _, rel := range []*string{&src, crt} {
			if rel != nil && *rel != "" {
				if derr := m.files.Delete(*rel); derr != nil {
					m.log.Error("removing the files of a failed submit", "build_id", id, "err", derr)
				}
			}
		}
		return Submitted{}, err
	}
	m.enqueue(ctx, toQueued(domain.Build{ID: id, Platform: p, SubmittedAt: nb.SubmittedAt, CertsPath: crt}))
	out := Submitted{ID: id, Token: token, SubmittedAt: nb.SubmittedAt}
	if original != nil {
		out.OriginalBuildID = *original
	}
	return out, nil
}

// enqueue tells the manager about a committed pending build. If the request
// cannot be delivered, the manager is flagged to reload pending builds from
// the store, so a committed build is never left out of the queue.
func (m *Manager) enqueue(ctx context.Context, b queuedBuild) {
	_, err := ask(ctx, m, func(_ context.Context, s *state) (struct{}, error) {
		// A build cancelled between its commit and this request is skipped
		// at assignment time (the store refuses to assign a non-pending build).
		if s.running[b.id] == nil {
			s.enqueue(b)
		}
		return struct{}{}, nil
	})
	if err != nil {
		m.kickReload()
		m.log.Warn("queueing a committed build failed; queue will reload from the store",
			"build_id", b.id, "err", err)
	}
}
