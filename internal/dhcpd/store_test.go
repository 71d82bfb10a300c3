package dhcpd

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := store{dir: filepath.Join(dir, "state")} // created on first save
	if got, err := s.load(); err != nil || got != nil {
		t.Fatalf("missing file: %v %v", got, err)
	}
	want := []Lease{
		{IP: addr("10.0.0.100"), Client: "id:01020000000001", MAC: macN(1), Hostname: "a", State: StateBound, Expires: t0},
		{IP: addr("10.0.0.101"), State: StateBad, Expires: t0.Add(time.Minute)},
	}
	if err := s.save(want); err != nil {
		t.Fatal(err)
	}
	got, err := s.load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("lease %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	fi, err := os.Stat(s.path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("lease file mode %v, want 0600", fi.Mode().Perm())
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(s.dir)
	if len(ents) != 1 {
		t.Errorf("state dir holds %d entries, want only the lease file", len(ents))
	}
}

func TestStoreRejectsBadFiles(t *testing.T) {
	for name, content := range map[string]string{
		"garbage":       "{not json",
		"other version": `{"version": 99, "leases": []}`,
	} {
		t.Run(name, func(t *testing.T) {
			s := store{dir: t.TempDir()}
			if err := os.WriteFile(s.path(), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := s.load(); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// A bad lease file does not stop the server: it is moved aside and the
// server starts empty.
func TestNewMovesBadLeaseFileAside(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, LeaseFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	spec := testSpec("10.0.0.100", "10.0.0.102")
	spec.StateDir = dir
	s, err := New(spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.LastError == "" {
		t.Error("status shows no error for a bad lease file")
	}
	if _, err := os.Stat(filepath.Join(dir, LeaseFile+".bad")); err != nil {
		t.Errorf("bad file not kept: %v", err)
	}
}
