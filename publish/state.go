package publish

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/uplinkd/uplinkd/internal/atomicfile"
)

// What each publisher last published lives in
// <state_dir>/publish/<uplink>/<publisher>.json (names path-escaped), so that
// a restart with an unchanged address publishes nothing and a changed one
// publishes once. The file also records the publisher's target (see
// Spec.target): a publisher pointed elsewhere starts afresh.
//
// Delivery is at least once: before each attempt the file records its
// intent (InFlight, LastAttempt), after it the result. A daemon killed
// while a publish was in flight finds the intent at the next start; it
// cannot know whether the server got the update, so it sends it again, but
// not before min_interval after the interrupted attempt, and says so in
// the log.

type publishState struct {
	Uplink      string     `json:"uplink"`
	Publisher   string     `json:"publisher"`
	Kind        string     `json:"kind"`
	Target      string     `json:"target"`
	Address     netip.Addr `json:"address"`
	PublishedAt time.Time  `json:"published_at"`
	LastAttempt time.Time  `json:"last_attempt"` // successful or not: min_interval spans restarts
	// InFlight is the address of an attempt that started and has not
	// ended (recorded before sending); absent once it ended.
	InFlight netip.Addr `json:"in_flight,omitzero"`
}

// maxStateFile bounds a state file: it is a few hundred bytes.
const maxStateFile = 64 << 10

func statePath(dir string, spec Spec) string {
	return filepath.Join(dir, "publish", url.PathEscape(spec.Uplink), url.PathEscape(spec.Name)+".json")
}

// loadPublishState returns the recorded state; a missing file, or one for a
// different target, is the zero state. A corrupt file is an error the
// caller logs (publishing once more is the safe reaction).
func loadPublishState(path string, spec Spec) (publishState, error) {
	// Opened like a secret file (no blocking on a FIFO, bounded), but any
	// owner and mode: the directory is the daemon's own.
	b, err := ReadRegularFile("publish state", path, maxStateFile, false)
	if errors.Is(err, fs.ErrNotExist) {
		return publishState{}, nil
	}
	if err != nil {
		return publishState{}, err
	}
	var st publishState
	if err := json.Unmarshal(b, &st); err != nil {
		return publishState{}, fmt.Errorf("%s: %w", path, err)
	}
	if st.Target != spec.target() {
		return publishState{}, nil
	}
	return st, nil
}

func savePublishState(path string, st publishState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}
