package dhcpd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// LeaseFile is the name of the lease file inside state_dir.
const LeaseFile = "dhcp-leases.json"

// leaseFileVersion changes when the format does; a file of another version
// is ignored (clients then re-request their addresses, which INIT-REBOOT
// handling grants when they are free).
const leaseFileVersion = 1

type leaseFileJSON struct {
	Version int     `json:"version"`
	Leases  []Lease `json:"leases"`
}

// store persists the lease table. Every write replaces the whole file
// atomically: a temporary file in the same directory is written and
// fsynced, then renamed over the old one and the directory fsynced, so a
// crash leaves either the old table or the new one, never half of one.
type store struct {
	dir string // "": memory only
}

func (s store) path() string { return filepath.Join(s.dir, LeaseFile) }

// load reads the lease file; a missing file is an empty table.
func (s store) load() ([]Lease, error) {
	if s.dir == "" {
		return nil, nil
	}
	b, err := os.ReadFile(s.path())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read lease file: %w", err)
	}
	var f leaseFileJSON
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("parse lease file %s: %w", s.path(), err)
	}
	if f.Version != leaseFileVersion {
		return nil, fmt.Errorf("lease file %s: version %d, want %d", s.path(), f.Version, leaseFileVersion)
	}
	return f.Leases, nil
}

// save writes leases atomically (see store).
func (s store) save(leases []Lease) error {
	if s.dir == "" {
		return nil
	}
	b, err := json.MarshalIndent(leaseFileJSON{Version: leaseFileVersion, Leases: leases}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode leases: %w", err)
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	tmp, err := os.CreateTemp(s.dir, LeaseFile+".tmp*")
	if err != nil {
		return fmt.Errorf("create temporary lease file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this fails harmlessly
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write lease file: %w", err)
	}
	// The table names hosts and their MACs: readable by root only.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod lease file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync lease file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close lease file: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path()); err != nil {
		return fmt.Errorf("replace lease file: %w", err)
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("open state dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync state dir: %w", err)
	}
	return nil
}
