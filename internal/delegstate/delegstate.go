// Package delegstate keeps the IPv6 prefixes delegated to the uplinks
// (DHCPv6-PD) that uplinkd learned at run time from `uplinkd event --iface
// IF --delegated PREFIX`, in memory and in <state_dir>/delegated.json, so
// that a restart keeps them until their valid lifetime ends
// (docs/ipv6.md). The daemon writes the file; `uplinkd plan` and the
// daemon's start read it.
//
// Per interface the newest delegation is the current one; one that a
// newer prefix replaced stays as a former one until its own valid lifetime
// ends, at most FormerHold after the replacement, so its source rule is
// removed only after the new one is in place (make-before-break, as for a
// renumbered address). A delegation that ends (`--delegated none`) goes at
// once with its former ones.
//
// The file is replaced atomically (internal/atomicfile); one that cannot be
// decoded is renamed to delegated.json.bad and counts as empty: the PD
// client reports the prefix again at its next renewal.
package delegstate

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/uplinkd/uplinkd/internal/statefile"
)

// FileName is the file's name inside state_dir.
const FileName = "delegated.json"

// FormerHold bounds how long a replaced delegation keeps its rule: long
// enough for LAN hosts to move to the new prefix (their addresses from the
// old one are deprecated by the router advertisements that follow), short
// enough that a prefix the ISP gave to someone else is not routed for long.
const FormerHold = 2 * time.Hour

// Infinite is the lifetime that never ends (RFC 8415: 0xffffffff).
const Infinite = 0xffffffff

const version = 1

// Delegation is one delegated prefix of an interface.
type Delegation struct {
	Iface  string       `json:"iface"`
	Prefix netip.Prefix `json:"prefix"`
	// Learned is when the PD client last reported it.
	Learned time.Time `json:"learned"`
	// PreferredUntil and ValidUntil are the ends of its lifetimes; zero:
	// infinite (or not told).
	PreferredUntil time.Time `json:"preferred_until,omitzero"`
	ValidUntil     time.Time `json:"valid_until,omitzero"`
	// Replaced is when a newer prefix replaced it: a former delegation.
	Replaced time.Time `json:"replaced,omitzero"`
}

// Current reports whether d is its interface's current delegation.
func (d Delegation) Current() bool { return d.Replaced.IsZero() }

// end is when d stops counting: its valid lifetime, and FormerHold after
// its replacement for a former one (zero: never).
func (d Delegation) end() time.Time {
	end := d.ValidUntil
	if !d.Replaced.IsZero() {
		if hold := d.Replaced.Add(FormerHold); end.IsZero() || hold.Before(end) {
			end = hold
		}
	}
	return end
}

// Set is the learned delegations per interface, newest first: [0] is the
// current one, the others former ones.
type Set map[string][]Delegation

// Lifetimes are a delegation's lifetimes as the PD client reports them, in
// seconds; nil: not told (infinite).
type Lifetimes struct {
	Preferred, Valid *uint32
}

func until(now time.Time, s *uint32) time.Time {
	if s == nil || *s == Infinite {
		return time.Time{}
	}
	return now.Add(time.Duration(*s) * time.Second)
}

// Learn records that iface holds prefix p now, with lifetimes lt. A new
// prefix makes the current one former. It reports whether the prefixes
// of iface changed (a pass is due); the lifetimes change on every renewal.
func (s Set) Learn(iface string, p netip.Prefix, lt Lifetimes, now time.Time) bool {
	d := Delegation{Iface: iface, Prefix: p, Learned: now.UTC(),
		PreferredUntil: until(now, lt.Preferred).UTC(), ValidUntil: until(now, lt.Valid).UTC()}
	old := s[iface]
	// The same prefix again (a renewal), or one that was former before.
	rest := slices.DeleteFunc(slices.Clone(old), func(o Delegation) bool { return o.Prefix == p })
	changed := len(old) == 0 || old[0].Prefix != p
	for i := range rest {
		if rest[i].Replaced.IsZero() {
			rest[i].Replaced = now.UTC()
		}
	}
	s[iface] = append([]Delegation{d}, rest...)
	return changed
}

// End removes every delegation of iface (the PD client's lease ended);
// it reports whether there was one.
func (s Set) End(iface string) bool {
	_, ok := s[iface]
	delete(s, iface)
	return ok
}

// Expire removes the delegations whose time is over at now and returns
// them.
func (s Set) Expire(now time.Time) []Delegation {
	var gone []Delegation
	for iface, ds := range s {
		keep := ds[:0]
		for _, d := range ds {
			if end := d.end(); !end.IsZero() && !now.Before(end) {
				gone = append(gone, d)
				continue
			}
			keep = append(keep, d)
		}
		if len(keep) == 0 {
			delete(s, iface)
		} else {
			s[iface] = keep
		}
	}
	return gone
}

// NextExpiry is when the next delegation's time is over (zero: none ends).
func (s Set) NextExpiry() time.Time {
	var next time.Time
	for _, ds := range s {
		for _, d := range ds {
			if end := d.end(); !end.IsZero() && (next.IsZero() || end.Before(next)) {
				next = end
			}
		}
	}
	return next
}

// Prefixes are the prefixes per interface, the current one first: what
// policy routes (policy.Observed.Delegated).
func (s Set) Prefixes() map[string][]netip.Prefix {
	if len(s) == 0 {
		return nil
	}
	out := make(map[string][]netip.Prefix, len(s))
	for iface, ds := range s {
		for _, d := range ds {
			out[iface] = append(out[iface], d.Prefix)
		}
	}
	return out
}

// Clone is a deep copy.
func (s Set) Clone() Set {
	out := make(Set, len(s))
	for k, v := range s {
		out[k] = slices.Clone(v)
	}
	return out
}

// Ifaces are the interfaces with a delegation, sorted.
func (s Set) Ifaces() []string {
	out := make([]string, 0, len(s))
	for k := range s {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

type fileJSON struct {
	V           int          `json:"v"`
	Delegations []Delegation `json:"delegations"`
}

// Path is the delegation file of stateDir.
func Path(stateDir string) string { return filepath.Join(stateDir, FileName) }

// CorruptError is a file that could not be decoded; Load renamed it to
// Moved (empty when even the rename failed).
type CorruptError = statefile.CorruptError

const what = "delegation state"

// Load reads the file at path. A missing file is an empty set; one that
// cannot be decoded is renamed to path+".bad" and Load returns an empty
// set with a *CorruptError; any other error comes with an empty set and
// leaves the file alone.
func Load(path string) (Set, error) { return statefile.Load(path, what, decode, emptySet) }

// Read is Load for readers that must change nothing (`uplinkd plan`).
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
	for _, d := range f.Delegations {
		if d.Iface == "" {
			return nil, errors.New("a delegation without an interface")
		}
		if err := CheckPrefix(d.Prefix); err != nil {
			return nil, fmt.Errorf("interface %s: %w", d.Iface, err)
		}
		if slices.ContainsFunc(set[d.Iface], func(o Delegation) bool { return o.Prefix == d.Prefix }) {
			return nil, fmt.Errorf("interface %s: prefix %s listed twice", d.Iface, d.Prefix)
		}
		if d.Current() != (len(set[d.Iface]) == 0) {
			return nil, fmt.Errorf("interface %s: the current delegation must come first, and only once", d.Iface)
		}
		set[d.Iface] = append(set[d.Iface], d)
	}
	return set, nil
}

// CheckPrefix reports what is wrong with p as a delegated prefix: an IPv6
// prefix of length 1..64 without host bits, global unicast or unique
// local (the rules of the config's delegated_prefix).
func CheckPrefix(p netip.Prefix) error {
	switch a := p.Addr(); {
	case !p.IsValid() || !a.Is6() || a.Is4In6() || a.Zone() != "":
		return fmt.Errorf("delegated prefix %s: not an IPv6 prefix", p)
	case p != p.Masked():
		return fmt.Errorf("delegated prefix %s has host bits set (the prefix is %s)", p, p.Masked())
	case p.Bits() == 0 || p.Bits() > 64:
		return fmt.Errorf("delegated prefix %s: want a /64 or shorter (and not ::/0)", p)
	case !a.IsGlobalUnicast() || a.IsLinkLocalUnicast():
		return fmt.Errorf("delegated prefix %s: not global unicast or unique local", p)
	}
	return nil
}

// Save replaces the file at path with set, atomically, creating its
// directory when needed (mode 0644: no secret in it).
func Save(path string, set Set) error {
	f := fileJSON{V: version, Delegations: []Delegation{}}
	for _, iface := range set.Ifaces() {
		f.Delegations = append(f.Delegations, set[iface]...)
	}
	return statefile.Save(path, what, f)
}
