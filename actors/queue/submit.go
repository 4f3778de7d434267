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
	// ErrTooManyRetries means a limited retry's chain — the submitted build
	// and every retry descending from it — already holds Config.MaxRetries
	// retries; nothing was created.
	ErrTooManyRetries = errors.New("queue: too many retries")
)

// Submission is a new build: its platform, its staged files, and what
// people recognise it by.
type Submission struct {
	Platform domain.Platform
	Source   *files.Staged // required
	Certs    *files.Staged // nil when the build has no certs
	// App is the project's name and version (empty when unknown); Label
	// the submitter's label ("" for none).
	App   files.AppInfo
	Label string
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
	nb := store.NewBuild{Platform: sub.Platform, AppName: sub.App.Name, AppVersion: sub.App.Version, Label: sub.Label}
	return m.create(ctx, nb, func(id string) (string, *string, error) {
		src, err := sub.Source.Commit(id, ".zip")
		if err != nil || sub.Certs == nil {
			return src, nil, err
		}
		crt, err := sub.Certs.Commit(id, ".zip")
		return src, &crt, err
	})
}

// RetryOptions says who asks for a retry.
type RetryOptions struct {
	// Limited bounds the retry chain at Config.MaxRetries retries per
	// submitted build (ErrTooManyRetries): set for a build-token caller,
	// clear for the admin key.
	Limited bool
}

// Retry is RetryWith without a limit: the admin's retry.
func (m *Manager) Retry(ctx context.Context, originalID string) (Submitted, error) {
	return m.RetryWith(ctx, originalID, RetryOptions{})
}

// RetryWith creates a new pending build with a finished build's source and
// certs (docs/API.md §2.8). The new build's files are hard links of the
// original's (files.Store.Link; a copy only where the file system refuses a
// link), so a retry costs no space. A limited retry is refused with
// ErrTooManyRetries when the chain of the original's submitted build already
// holds Config.MaxRetries retries: checked first without touching a file, and
// again inside the transaction that inserts the build, so concurrent retries
// cannot overshoot. It returns store.ErrNotFound, ErrNotFinished,
// store.ErrPurged when retention has taken the original's files (also when
// the purge races the retry: checked again inside the transaction),
// ErrTooManyRetries, ErrFilesGone when a file of the original is missing, or
// the store's and the file store's errors.
func (m *Manager) RetryWith(ctx context.Context, originalID string, opts RetryOptions) (Submitted, error) {
	orig, err := m.store.GetBuild(ctx, originalID)
	if err != nil {
		return Submitted{}, err
	}
	if !orig.Finished() {
		return Submitted{}, ErrNotFinished
	}
	if orig.PurgedAt != nil {
		return Submitted{}, store.ErrPurged
	}
	root := orig.ID
	if orig.RootBuildID != nil {
		root = *orig.RootBuildID
	}
	nb := store.NewBuild{Platform: orig.Platform, OriginalBuildID: &orig.ID, RootBuildID: &root}
	if opts.Limited {
		n, err := m.store.CountRetries(ctx, root)
		if err != nil {
			return Submitted{}, err
		}
		if n >= m.cfg.MaxRetries {
			return Submitted{}, ErrTooManyRetries
		}
		nb.MaxChain = m.cfg.MaxRetries
	}
	out, err := m.create(ctx, nb, func(id string) (string, *string, error) {
		src, err := m.linkFile(orig.SourcePath, files.KindSource, id)
		if err != nil || orig.CertsPath == nil {
			return src, nil, err
		}
		crt, err := m.linkFile(*orig.CertsPath, files.KindCerts, id)
		return src, &crt, err
	})
	if errors.Is(err, store.ErrRetryLimit) {
		return Submitted{}, ErrTooManyRetries
	}
	if errors.Is(err, ErrFilesGone) && m.purgedSince(ctx, orig.ID) {
		// Retention marks a build before it deletes its files: a file that
		// vanished under the link was taken by a purge, not lost.
		return Submitted{}, store.ErrPurged
	}
	return out, err
}

// purgedSince reports whether retention has taken the build's files.
func (m *Manager) purgedSince(ctx context.Context, id string) bool {
	b, err := m.store.GetBuild(ctx, id)
	return err == nil && b.PurgedAt != nil
}

func (m *Manager) linkFile(rel string, kind files.Kind, id string) (string, error) {
	out, err := m.files.Link(rel, kind, id, ".zip")
	if errors.Is(err, files.ErrFileNotFound) || errors.Is(err, files.ErrBadPath) {
		return "", fmt.Errorf("%w: %v", ErrFilesGone, err)
	}
	return out, err
}

// create is a build's birth: mint id and token, place the files (place
// returns their paths), commit the row (nb: platform, and a retry's original,
// root and chain bound), queue it; on failure remove what was placed.
func (m *Manager) create(ctx context.Context, nb store.NewBuild, place func(id string) (string, *string, error)) (Submitted, error) {
	id := uuid.NewString()
	token, digest, err := domain.NewToken()
	if err != nil {
		return Submitted{}, err
	}
	src, crt, err := place(id)
	nb.ID, nb.SubmittedAt, nb.SourcePath, nb.CertsPath, nb.TokenHash = id, m.now(), src, crt, digest
	p, original := nb.Platform, nb.OriginalBuildID
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
			m.serveWaiters(s)
		}
		return struct{}{}, nil
	})
	if err != nil {
		m.kickReload()
		m.log.Warn("queueing a committed build failed; queue will reload from the store",
			"build_id", b.id, "err", err)
	}
}
