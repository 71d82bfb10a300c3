package delegstate

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

var (
	pa = netip.MustParsePrefix("2001:db8:a::/56")
	pb = netip.MustParsePrefix("2001:db8:b::/56")
	t0 = time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
)

func secs(v uint32) *uint32 { return &v }

// TestLifecycle: learn, renew, replace (the former stays until its hold
// or valid lifetime ends), expire, end.
func TestLifecycle(t *testing.T) {
	s := Set{}
	if !s.Learn("ppp0", pa, Lifetimes{Preferred: secs(1800), Valid: secs(3600)}, t0) {
		t.Fatal("first delegation: no change reported")
	}
	if s.Learn("ppp0", pa, Lifetimes{Preferred: secs(1800), Valid: secs(7200)}, t0.Add(time.Minute)) {
		t.Error("a renewal reported a change of prefixes")
	}
	if got := s["ppp0"][0].ValidUntil; !got.Equal(t0.Add(time.Minute + 2*time.Hour)) {
		t.Errorf("renewal: valid until %v", got)
	}
	if next := s.NextExpiry(); !next.Equal(t0.Add(time.Minute + 2*time.Hour)) {
		t.Errorf("NextExpiry = %v", next)
	}
	// A new prefix: the old one stays, former, at most FormerHold.
	t1 := t0.Add(10 * time.Minute)
	if !s.Learn("ppp0", pb, Lifetimes{Valid: secs(Infinite)}, t1) {
		t.Fatal("new prefix: no change reported")
	}
	want := map[string][]netip.Prefix{"ppp0": {pb, pa}}
	if got := s.Prefixes(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Prefixes = %v, want %v", got, want)
	}
	if s["ppp0"][0].ValidUntil != (time.Time{}) || !s["ppp0"][0].Current() || s["ppp0"][1].Current() {
		t.Errorf("after the new prefix: %+v", s["ppp0"])
	}
	// pa's valid lifetime (t0+2h1m) ends before its hold (t1+2h).
	if gone := s.Expire(t0.Add(2*time.Hour + time.Minute)); len(gone) != 1 || gone[0].Prefix != pa {
		t.Fatalf("Expire = %v, want pa", gone)
	}
	if got := s.Prefixes(); !reflect.DeepEqual(got, map[string][]netip.Prefix{"ppp0": {pb}}) {
		t.Fatalf("after expiry: %v", got)
	}
	if !s.NextExpiry().IsZero() {
		t.Errorf("an infinite delegation expires at %v", s.NextExpiry())
	}
	// Back to pa: pb becomes former, with the hold as its end.
	t2 := t0.Add(3 * time.Hour)
	s.Learn("ppp0", pa, Lifetimes{}, t2)
	if next := s.NextExpiry(); !next.Equal(t2.Add(FormerHold)) {
		t.Errorf("former hold: NextExpiry = %v, want %v", next, t2.Add(FormerHold))
	}
	if gone := s.Expire(t2.Add(FormerHold)); len(gone) != 1 || gone[0].Prefix != pb {
		t.Errorf("hold over: Expire = %v", gone)
	}
	// A valid lifetime of 0 ends the delegation at once.
	s.Learn("eth1", pb, Lifetimes{Valid: secs(0)}, t2)
	if gone := s.Expire(t2); len(gone) != 1 {
		t.Errorf("valid 0: Expire = %v", gone)
	}
	if !s.End("ppp0") || s.End("ppp0") || len(s) != 0 {
		t.Errorf("End: %v", s)
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	path := Path(filepath.Join(t.TempDir(), "state"))
	if set, err := Load(path); err != nil || len(set) != 0 {
		t.Fatalf("missing file: %v, %v", set, err)
	}
	s := Set{}
	s.Learn("ppp0", pa, Lifetimes{Preferred: secs(60), Valid: secs(120)}, t0)
	s.Learn("ppp0", pb, Lifetimes{}, t0.Add(time.Second))
	s.Learn("eth1", netip.MustParsePrefix("fd00:1::/64"), Lifetimes{}, t0)
	if err := Save(path, s); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Errorf("Load = %+v\nwant %+v", got, s)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("stat: %v %v", fi, err)
	}
}

func TestCorruptFile(t *testing.T) {
	for name, content := range map[string]string{
		"not json":       "{deleg",
		"wrong version":  `{"v":2,"delegations":[]}`,
		"unknown field":  `{"v":1,"delegations":[],"x":1}`,
		"no iface":       `{"v":1,"delegations":[{"prefix":"2001:db8::/56"}]}`,
		"IPv4 prefix":    `{"v":1,"delegations":[{"iface":"a","prefix":"10.0.0.0/8"}]}`,
		"longer than 64": `{"v":1,"delegations":[{"iface":"a","prefix":"2001:db8::/96"}]}`,
		"host bits":      `{"v":1,"delegations":[{"iface":"a","prefix":"2001:db8::1/56"}]}`,
		"twice":          `{"v":1,"delegations":[{"iface":"a","prefix":"2001:db8::/56"},{"iface":"a","prefix":"2001:db8::/56","replaced":"2026-01-01T00:00:00Z"}]}`,
		"two current":    `{"v":1,"delegations":[{"iface":"a","prefix":"2001:db8::/56"},{"iface":"a","prefix":"2001:db9::/56"}]}`,
		"trailing":       `{"v":1,"delegations":[]} {}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := Path(t.TempDir())
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			var ce *CorruptError
			if set, err := Read(path); !errors.As(err, &ce) || len(set) != 0 {
				t.Fatalf("Read = %v, %v; want empty and a CorruptError", set, err)
			}
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("Read moved the file: %v", err)
			}
			if set, err := Load(path); !errors.As(err, &ce) || len(set) != 0 || ce.Moved != path+".bad" {
				t.Fatalf("Load = %v, %v; want empty, moved aside", set, err)
			}
			if _, err := os.Stat(path + ".bad"); err != nil {
				t.Error(err)
			}
		})
	}
}
