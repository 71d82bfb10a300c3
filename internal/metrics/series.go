package metrics

import (
	"bytes"
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// The series types below replace VictoriaMetrics' Counter, Gauge,
// PrometheusHistogram and Set (see doc.go for why) and write the same text
// as its v1.45.0 did with ExposeMetadata(true): families sorted by name,
// the series of a family by their full name, an empty "# HELP" and a
// "# TYPE" line before each family, integers without an exponent.

// series is one registered series: it appends its sample lines under name
// (the family name with its labels, if any).
type series interface {
	appendTo(b []byte, name string) []byte
	typ() string
}

// counter counts up from 0.
type counter struct{ n atomic.Uint64 }

func (c *counter) Inc() { c.n.Add(1) }

func (c *counter) appendTo(b []byte, name string) []byte {
	b = append(append(b, name...), ' ')
	return append(strconv.AppendUint(b, c.n.Load(), 10), '\n')
}

func (*counter) typ() string { return "counter" }

// gauge holds the float64 set last, as its bits, so that Set and a scrape
// need no lock.
type gauge struct{ bits atomic.Uint64 }

func (g *gauge) Set(v float64) { g.bits.Store(math.Float64bits(v)) }

func (g *gauge) appendTo(b []byte, name string) []byte {
	b = append(append(b, name...), ' ')
	return append(appendValue(b, math.Float64frombits(g.bits.Load())), '\n')
}

func (*gauge) typ() string { return "gauge" }

// appendValue formats v as VictoriaMetrics' gauges and histogram sums do:
// a whole number as an integer (1700000000, not 1.7e+09), anything else
// in the shortest %g form.
func appendValue(b []byte, v float64) []byte {
	if float64(int64(v)) == v {
		return strconv.AppendInt(b, int64(v), 10)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// histogram is a Prometheus histogram with fixed upper bounds.
type histogram struct {
	bounds []float64 // increasing, without +Inf

	mu     sync.Mutex
	counts []uint64 // of each bucket alone, not cumulative
	count  uint64   // every observation, the +Inf bucket
	sum    float64
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]uint64, len(bounds))}
}

// Update records v; a negative v or NaN is ignored, as VictoriaMetrics did.
func (h *histogram) Update(v float64) {
	if math.IsNaN(v) || v < 0 {
		return
	}
	i, _ := slices.BinarySearch(h.bounds, v) // first bound >= v
	h.mu.Lock()
	if i < len(h.counts) {
		h.counts[i]++
	}
	h.count++
	h.sum += v
	h.mu.Unlock()
}

func (h *histogram) appendTo(b []byte, name string) []byte {
	family, labels := splitName(name)
	le := `{le="`
	if labels != "" && labels != "{}" {
		le = labels[:len(labels)-1] + `,le="`
	}
	h.mu.Lock()
	var cum uint64
	for i, ub := range h.bounds {
		cum += h.counts[i]
		b = append(append(append(b, family...), "_bucket"...), le...)
		b = append(strconv.AppendFloat(b, ub, 'g', -1, 64), `"} `...)
		b = append(strconv.AppendUint(b, cum, 10), '\n')
	}
	count, sum := h.count, h.sum
	h.mu.Unlock()
	b = append(append(b, family...), "_bucket"+le+`+Inf"} `...)
	b = append(strconv.AppendUint(b, count, 10), '\n')
	b = append(append(b, family...), "_sum"+labels+" "...)
	b = append(appendValue(b, sum), '\n')
	b = append(append(b, family...), "_count"+labels+" "...)
	return append(strconv.AppendUint(b, count, 10), '\n')
}

func (*histogram) typ() string { return "histogram" }

// splitName splits `name{labels}` into name and `{labels}`.
func splitName(name string) (family, labels string) {
	if i := strings.IndexByte(name, '{'); i >= 0 {
		return name[:i], name[i:]
	}
	return name, ""
}

// seriesSet holds series by their full name with labels. Names are built
// by this package with escapeLabel, so they are not validated again.
type seriesSet struct {
	mu sync.Mutex
	m  map[string]series
}

func newSeriesSet() *seriesSet { return &seriesSet{m: map[string]series{}} }

// getOrCreate returns the series registered as name, registering the one
// create makes if there is none. A name registered with another type is a
// bug in this package, and panics.
func getOrCreate[T series](s *seriesSet, name string, create func() T) T {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.m[name]; ok {
		return m.(T)
	}
	m := create()
	s.m[name] = m
	return m
}

func (s *seriesSet) counter(name string) *counter {
	return getOrCreate(s, name, func() *counter { return new(counter) })
}

func (s *seriesSet) gauge(name string) *gauge {
	return getOrCreate(s, name, func() *gauge { return new(gauge) })
}

func (s *seriesSet) histogram(name string, bounds []float64) *histogram {
	return getOrCreate(s, name, func() *histogram { return newHistogram(bounds) })
}

// remove unregisters the series called name, if any.
func (s *seriesSet) remove(name string) {
	s.mu.Lock()
	delete(s.m, name)
	s.mu.Unlock()
}

// writeTo writes every series in the Prometheus text format 0.0.4, in
// VictoriaMetrics' order: by family name, then by full name.
func (s *seriesSet) writeTo(w *bytes.Buffer) {
	type named struct {
		name, family string
		s            series
	}
	s.mu.Lock()
	all := make([]named, 0, len(s.m))
	for name, m := range s.m {
		family, _ := splitName(name)
		all = append(all, named{name, family, m})
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b named) int {
		return cmp.Or(strings.Compare(a.family, b.family), strings.Compare(a.name, b.name))
	})
	b := w.AvailableBuffer()
	prev := ""
	for _, n := range all {
		if n.family != prev {
			b = appendMeta(b, n.family, n.s.typ())
			prev = n.family
		}
		b = n.s.appendTo(b, n.name)
	}
	w.Write(b)
}

// appendMeta appends the HELP and TYPE lines of a family; the HELP text is
// empty, as VictoriaMetrics wrote it (docs/metrics.md has the help).
func appendMeta(b []byte, family, typ string) []byte {
	return append(b, "# HELP "+family+"\n# TYPE "+family+" "+typ+"\n"...)
}
