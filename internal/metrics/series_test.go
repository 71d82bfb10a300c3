package metrics

import (
	"bytes"
	"math"
	"strings"
	"sync"
	"testing"
)

// TestSeriesText: the text the series types write, exactly as
// VictoriaMetrics v1.45.0 wrote it: families sorted, one HELP/TYPE per
// family, cumulative buckets up to +Inf, _sum and _count with the
// series' labels, whole numbers without an exponent, escaped labels.
func TestSeriesText(t *testing.T) {
	s := newSeriesSet()
	h := s.histogram(`t_seconds{uplink="`+escapeLabel("a\"b\\c\n")+`"}`, []float64{0.25, 0.5, 1})
	for _, v := range []float64{0.125, 0.5, 0.75, 3, -1, math.NaN()} { // 0.5: on a bound; -1, NaN: ignored
		h.Update(v)
	}
	p := s.histogram("t_plain_seconds", []float64{1})
	p.Update(2)
	p.Update(3)
	s.counter(`t_total{x="1"}`).Inc()
	s.counter(`t_total{x="1"}`).Inc() // the same series
	s.counter(`t_total{x="0"}`)
	s.gauge("t_gauge").Set(1.7000000005e9)
	s.gauge("t_gauge_int").Set(1700000000)
	s.gauge(`t_ratio{a="b"}`).Set(0.25)
	s.gauge(`t_ratio{a="a"}`).Set(-3)
	s.gauge(`t_ratio{a="c"}`).Set(1e20)
	s.gauge("t_gone").Set(1)
	s.remove("t_gone")

	var b bytes.Buffer
	s.writeTo(&b)
	want := `# HELP t_gauge
# TYPE t_gauge gauge
t_gauge 1.7000000005e+09
# HELP t_gauge_int
# TYPE t_gauge_int gauge
t_gauge_int 1700000000
# HELP t_plain_seconds
# TYPE t_plain_seconds histogram
t_plain_seconds_bucket{le="1"} 0
t_plain_seconds_bucket{le="+Inf"} 2
t_plain_seconds_sum 5
t_plain_seconds_count 2
# HELP t_ratio
# TYPE t_ratio gauge
t_ratio{a="a"} -3
t_ratio{a="b"} 0.25
t_ratio{a="c"} 1e+20
# HELP t_seconds
# TYPE t_seconds histogram
t_seconds_bucket{uplink="a\"b\\c\n",le="0.25"} 1
t_seconds_bucket{uplink="a\"b\\c\n",le="0.5"} 2
t_seconds_bucket{uplink="a\"b\\c\n",le="1"} 3
t_seconds_bucket{uplink="a\"b\\c\n",le="+Inf"} 4
t_seconds_sum{uplink="a\"b\\c\n"} 4.375
t_seconds_count{uplink="a\"b\\c\n"} 4
# HELP t_total
# TYPE t_total counter
t_total{x="0"} 0
t_total{x="1"} 2
`
	if got := b.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// TestPassDurationText: the pass histogram's buckets print as they did.
func TestPassDurationText(t *testing.T) {
	s := newSeriesSet()
	s.histogram("h", passBuckets).Update(0.0003)
	var b bytes.Buffer
	s.writeTo(&b)
	for _, want := range []string{`h_bucket{le="0.00025"} 0`, `h_bucket{le="0.0005"} 1`, `h_bucket{le="2.5"} 1`, `h_sum 0.0003`} {
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("missing %q in\n%s", want, b.String())
		}
	}
}

// TestSeriesConcurrent: recording while scraping (run with -race).
func TestSeriesConcurrent(t *testing.T) {
	s := newSeriesSet()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 200 {
				s.counter("c_total").Inc()
				s.gauge(`g{i="` + string(rune('a'+i)) + `"}`).Set(float64(j))
				s.histogram("h_seconds", passBuckets).Update(float64(j) / 1000)
				if j%10 == 0 {
					s.remove(`g{i="` + string(rune('a'+i)) + `"}`)
				}
			}
		})
	}
	for range 20 {
		var b bytes.Buffer
		s.writeTo(&b)
	}
	wg.Wait()
	var b bytes.Buffer
	s.writeTo(&b)
	for _, want := range []string{"c_total 800", `h_seconds_bucket{le="+Inf"} 800`, "h_seconds_count 800"} {
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("missing %q in\n%s", want, b.String())
		}
	}
}
