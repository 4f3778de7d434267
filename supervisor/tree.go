// Package supervisor assembles the controller's suture supervision tree:
//
//	controller (root)
//	├── core
//	│   ├── queue-manager
//	│   └── liveness-monitor
//	├── file-storage
//	├── webhooks                 (only with a webhook URL)
//	│   └── webhook-sender
//	├── retention                (only with a retention)
//	│   └── retention-collector
//	└── http-server
//
// The queue manager and the liveness monitor share the core supervisor so
// that a flapping file service or HTTP listener never puts the queue into
// restart backoff (suture keeps one failure budget per supervisor). The
// webhook sender has a supervisor of its own for the same reason: a
// receiver's failures are its normal work, and a sender that keeps failing
// (its database reads) must never hold back the restart of anything else.
// The retention collector is housekeeping, kept apart for the same reason.
package supervisor

import (
	"log/slog"
	"time"

	"github.com/thejerf/suture/v4"
)

// Services are the constructed services of the tree.
type Services struct {
	Queue   suture.Service
	Monitor suture.Service
	Files   suture.Service
	HTTP    suture.Service
	// Webhooks is the webhook sender; nil when no webhook URL is configured.
	Webhooks suture.Service
	// Retention is the retention collector; nil when everything is kept.
	Retention suture.Service
	// Notifications is the listener for other nodes' changes (PostgreSQL:
	// store.Listener); nil on SQLite.
	Notifications suture.Service
}

// Options tune the supervisors; zero values take suture's defaults except
// where noted.
type Options struct {
	// StopTimeout is how long a supervisor waits for its services to stop
	// (default 35 s: longer than the HTTP drain of 30 s).
	StopTimeout time.Duration
	// FailureBackoff is the pause after too many failures (suture default 15 s).
	FailureBackoff time.Duration
}

// New returns the root supervisor with every service added; it starts nothing.
func New(log *slog.Logger, s Services, o Options) *suture.Supervisor {
	if o.StopTimeout <= 0 {
		o.StopTimeout = 35 * time.Second
	}
	spec := suture.Spec{
		EventHook:      EventHook(log),
		Timeout:        o.StopTimeout,
		FailureBackoff: o.FailureBackoff,
	}
	root := suture.New("controller", spec)
	core := suture.New("core", spec)
	core.Add(s.Queue)
	core.Add(s.Monitor)
	root.Add(core)
	root.Add(s.Files)
	if s.Webhooks != nil {
		hooks := suture.New("webhooks", spec)
		hooks.Add(s.Webhooks)
		root.Add(hooks)
	}
	if s.Retention != nil {
		gc := suture.New("retention", spec)
		gc.Add(s.Retention)
		root.Add(gc)
	}
	if s.Notifications != nil {
		// Its own supervisor: a database that drops the connection again and
		// again backs off here, and each failed start makes the node reload.
		notes := suture.New("notifications", spec)
		notes.Add(s.Notifications)
		root.Add(notes)
	}
	root.Add(s.HTTP)
	return root
}

// EventHook logs suture's events — panics, failures, backoff, stop timeouts —
// with slog.
func EventHook(log *slog.Logger) suture.EventHook {
	return func(e suture.Event) {
		switch ev := e.(type) {
		case suture.EventServicePanic:
			log.Error("service panicked", "supervisor", ev.SupervisorName, "service", ev.ServiceName,
				"panic", ev.PanicMsg, "restarting", ev.Restarting, "failures", ev.CurrentFailures,
				"stack", ev.Stacktrace)
		case suture.EventServiceTerminate:
			log.Error("service failed", "supervisor", ev.SupervisorName, "service", ev.ServiceName,
				"err", ev.Err, "restarting", ev.Restarting, "failures", ev.CurrentFailures)
		case suture.EventBackoff:
			log.Warn("supervisor backing off after repeated failures", "supervisor", ev.SupervisorName)
		case suture.EventResume:
			log.Info("supervisor resuming", "supervisor", ev.SupervisorName)
		case suture.EventStopTimeout:
			log.Error("service did not stop in time", "supervisor", ev.SupervisorName, "service", ev.ServiceName)
		default:
			log.Info("supervisor event", "event", e.String())
		}
	}
}
