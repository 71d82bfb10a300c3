// Package drainstate keeps the set of uplinks drained by hand (`uplinkd
// drain NAME`) in <state_dir>/drained.json, so that a drain outlives a
// restart of the daemon. The daemon writes the file; `uplinkd plan` and the
// daemon's start read it.
//
// The file is replaced atomically (temporary file and rename), so a crash
// leaves the old or the new set. A file that cannot be decoded is renamed to
// drained.json.bad and counts as empty: a drain that is lost is reported,
// never a reason for the daemon not to start.
package drainstate

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/uplinkd/uplinkd/internal/statefile"
)

// FileName is the file's name inside state_dir.
const FileName = "drained.json"

// version is the file format's version.
const version = 1

// Entry is one drained uplink and who drained it, when.
type Entry struct {
	Name  string    `json:"name"`
	Since time.Time `json:"since"`
	// UID and PID of the control socket's peer that asked (SO_PEERCRED).
	UID uint32 `json:"uid"`
	PID int32  `json:"pid"`
}

// Set is the drained uplinks by name.
type Set map[string]Entry

// Names are the drained uplinks' names, sorted.
func (s Set) Names() []string {
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

type fileJSON struct {
	V       int     `json:"v"`
	Uplinks []Entry `json:"uplinks"`
}

// Path is the drain file of stateDir.
func Path(stateDir string) string { return filepath.Join(stateDir, FileName) }

// CorruptError is a drain file that could not be decoded; Load renamed it
// to Moved (empty when even the rename failed).
type CorruptError = statefile.CorruptError

const what = "drain state"

// Load reads the drain file at path. A missing file is an empty set. A file
// that cannot be decoded is renamed to path+".bad" and Load returns an empty
// set with a *CorruptError; any other error (the file cannot be read) comes
// with an empty set too, and the file is left alone.
func Load(path string) (Set, error) { return statefile.Load(path, what, decode, emptySet) }

// Read is Load for readers that must change nothing (`uplinkd plan`): a
// corrupt file is reported and counts as empty, but stays where it is.
func Read(path string) (Set, error) { return statefile.Read(path, what, decode, emptySet) }

func emptySet() Set { return Set{} }

func decode(data []byte) (Set, error) {
	var f fileJSON
	if err := statefile.DecodeJSON(data, &f); err != nil {
		return nil, err
	}
	if f.V != version {
		return nil, fmt.Errorf("format version %d, want %d", f.V, version)
	}
	set := Set{}
	for _, e := range f.Uplinks {
		if e.Name == "" {
			return nil, errors.New("an entry without a name")
		}
		if _, dup := set[e.Name]; dup {
			return nil, fmt.Errorf("uplink %q listed twice", e.Name)
		}
		set[e.Name] = e
	}
	return set, nil
}

// Save replaces the drain file at path with set, atomically, creating its
// directory when needed. The file names no secret: mode 0644.
func Save(path string, set Set) error {
	f := fileJSON{V: version, Uplinks: make([]Entry, 0, len(set))}
	for _, n := range set.Names() {
		e := set[n]
		e.Name = n
		f.Uplinks = append(f.Uplinks, e)
	}
	return statefile.Save(path, what, f)
}
