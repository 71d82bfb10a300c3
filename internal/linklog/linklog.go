// Package linklog is the one ordered history of what happened to network
// links: up, down, new, gone, renamed, address added or removed, each with a
// sequence number, and a gap marker wherever the history was rebuilt from a
// dump instead of told by notifications.
//
// The kernel mirror (internal/kernel) is its only writer: it appends a record
// for every transition a notification makes to its copy of the kernel, and a
// Gap record per link whenever it reloads from a dump (at start, after an
// overflow, after a failed write). The reconcile loop is its reader: each
// pass asks for the records between the sequence number the previous pass
// saw and the one its snapshot carries, and learns from them what happened in
// between (a bounce no pass saw, a link the kernel flushed) instead of
// inferring it from its own memory of earlier passes.
//
// Why a Gap is not a transition: a dump shows the kernel as it is, not how it
// got there, and notifications older than the dump may still be queued on the
// watcher's socket. The mirror drops those stale notifications (see
// internal/kernel) and states across the gap are compared instead: a Gap's
// Downs is the number of down transitions the kernel itself counted in
// between (its carrier_down_count), or one for a link that was deleted or went
// down, never a guess from replayed messages. docs/design.md ("Link history")
// tells the whole story.
package linklog

import (
	"fmt"
	"net/netip"
	"sync"
)

// Kind is what a record says happened.
type Kind uint8

const (
	// Up: the link became administratively up with carrier.
	Up Kind = iota + 1
	// Down: the link lost IFF_UP or its carrier.
	Down
	// Appeared: an interface index appeared (created, or first seen).
	Appeared
	// Gone: the interface was deleted.
	Gone
	// Renamed: the interface index now has another name (OldName).
	Renamed
	// AddrAdded and AddrRemoved: an address appeared on or left the link.
	AddrAdded
	AddrRemoved
	// Gap: the mirror was reloaded from a dump; states are compared across
	// it, and Downs says what the kernel counted in between.
	Gap
)

func (k Kind) String() string {
	switch k {
	case Up:
		return "up"
	case Down:
		return "down"
	case Appeared:
		return "appeared"
	case Gone:
		return "gone"
	case Renamed:
		return "renamed"
	case AddrAdded:
		return "addr-added"
	case AddrRemoved:
		return "addr-removed"
	case Gap:
		return "gap"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Record is one entry of the history.
type Record struct {
	Seq   uint64
	Kind  Kind
	Name  string // the link's name when the record was made
	Index int
	// OldName is the name before a rename.
	OldName string
	// Downs is how many down transitions the record stands for: 1 for Down
	// and for Gone of a link that was up, 0 for the others, and for a Gap
	// the down transitions that happened across it.
	Downs int
	// Addr is the address of AddrAdded and AddrRemoved.
	Addr netip.Prefix
}

func (r Record) String() string {
	s := fmt.Sprintf("#%d %s %s[%d]", r.Seq, r.Kind, r.Name, r.Index)
	if r.OldName != "" {
		s += " was " + r.OldName
	}
	if r.Addr.IsValid() {
		s += " " + r.Addr.String()
	}
	if r.Downs > 0 {
		s += fmt.Sprintf(" downs=%d", r.Downs)
	}
	return s
}

// DefaultCapacity is how many records a History keeps: far more link
// events than a gateway sees between two passes, small enough to cost
// nothing (a record is about 80 bytes).
const DefaultCapacity = 4096

// History is a bounded, ordered log of records. It is safe for concurrent
// use. The zero value is not usable: use New.
type History struct {
	mu   sync.Mutex
	ring []Record // ring[i%cap] holds sequence number i+1
	last uint64
}

// New returns an empty history that keeps the latest capacity records.
func New(capacity int) *History {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	return &History{ring: make([]Record, capacity)}
}

// Append adds r with the next sequence number and returns that number.
func (h *History) Append(r Record) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last++
	r.Seq = h.last
	h.ring[(h.last-1)%uint64(len(h.ring))] = r
	return h.last
}

// Last is the sequence number of the newest record (0: none yet).
func (h *History) Last() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// Between returns the records with from < Seq <= to, oldest first.
// complete is false when some of them have already been overwritten (more
// than the capacity happened in between): the caller must then treat the
// span like a gap.
func (h *History) Between(from, to uint64) (recs []Record, complete bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	to = min(to, h.last)
	if to <= from {
		return nil, true
	}
	complete = true
	if n := uint64(len(h.ring)); to-from > n {
		from, complete = to-n, false
	}
	recs = make([]Record, 0, to-from)
	for seq := from + 1; seq <= to; seq++ {
		recs = append(recs, h.ring[(seq-1)%uint64(len(h.ring))])
	}
	return recs, complete
}

// Summary is what the records of one link name say happened in a span.
type Summary struct {
	// Touched: some record names the link (any kind, a gap included).
	Touched bool
	// Downs: the down transitions in the span, each once.
	Downs int
	// Records of the link, in order.
	Records []Record
}

// Summarize groups records by link name: a rename counts for both names.
func Summarize(recs []Record) map[string]Summary {
	out := map[string]Summary{}
	add := func(name string, r Record) {
		s := out[name]
		s.Touched = true
		s.Downs += r.Downs
		s.Records = append(s.Records, r)
		out[name] = s
	}
	for _, r := range recs {
		add(r.Name, r)
		if r.OldName != "" && r.OldName != r.Name {
			add(r.OldName, r)
		}
	}
	return out
}
