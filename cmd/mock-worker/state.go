package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// state is what survives a restart: the id the controller gave us, so that
// the next run re-registers as the same worker, and (protocol v2) the
// current worker token.
type state struct {
	WorkerID    string `json:"worker_id"`
	Name        string `json:"name,omitempty"`
	Controller  string `json:"controller,omitempty"`
	AccessToken string `json:"access_token,omitempty"`
}

// saveState keeps the worker id (and the v2 worker token) for the next run.
func (w *worker) saveState() {
	st := state{WorkerID: w.id, Name: w.cfg.Name, Controller: w.cfg.URL, AccessToken: w.token}
	if err := saveState(w.cfg.StateFile, st); err != nil {
		w.out.Warnf("cannot save the worker id to %s: %v", w.cfg.StateFile, err)
	}
}

// loadState reads the state file. A missing file (or an empty path) is a
// zero state and no error; an unreadable or malformed file is an error.
func loadState(path string) (state, error) {
	var st state
	if path == "" {
		return st, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return state{}, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// saveState writes the state file atomically with mode 0600 (its directory
// 0700), so a crash never leaves half a file. An empty path saves nothing.
func saveState(path string, st state) error {
	if path == "" {
		return nil
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".mock-worker-state-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
