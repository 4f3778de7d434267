package domain

// StatusObject is a build's status object (docs/API.md §2.4), field for
// field: the answer of GET /api/builds/:id/status and the "build" of a
// webhook event (§3.5). Only a failed build carries its error message.
type StatusObject struct {
	ID           string      `json:"id"`
	Status       BuildStatus `json:"status"`
	Platform     Platform    `json:"platform"`
	WorkerID     *string     `json:"worker_id"`
	SubmittedAt  int64       `json:"submitted_at"`
	StartedAt    *int64      `json:"started_at"`
	CompletedAt  *int64      `json:"completed_at"`
	ErrorMessage *string     `json:"error_message"`
	// FilesPurgedAt is set only once retention has taken the build's files:
	// a ninth field, absent otherwise, so that the object of every other
	// build stays the eight fields the clients know.
	FilesPurgedAt *int64 `json:"files_purged_at,omitempty"`
}

// StatusObject returns the build's status object.
func (b Build) StatusObject() StatusObject {
	out := StatusObject{ID: b.ID, Status: b.Status, Platform: b.Platform, WorkerID: b.WorkerID,
		SubmittedAt: b.SubmittedAt, StartedAt: b.StartedAt, CompletedAt: b.CompletedAt, FilesPurgedAt: b.PurgedAt}
	if b.Status == StatusFailed {
		out.ErrorMessage = b.ErrorMessage
	}
	return out
}
