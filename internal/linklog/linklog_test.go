package linklog

import (
	"slices"
	"testing"
)

func TestBetween(t *testing.T) {
	h := New(4)
	for i := range 6 {
		h.Append(Record{Kind: Down, Name: "ppp0", Index: i, Downs: 1})
	}
	tests := []struct {
		name         string
		from, to     uint64
		wantIndexes  []int
		wantComplete bool
	}{
		{"nothing new", 6, 6, nil, true},
		{"the last two", 4, 6, []int{4, 5}, true},
		{"up to an earlier snapshot", 3, 5, []int{3, 4}, true},
		{"past the newest is the newest", 5, 99, []int{5}, true},
		{"overwritten: the kept ones, incomplete", 0, 6, []int{2, 3, 4, 5}, false},
		{"exactly the capacity", 2, 6, []int{2, 3, 4, 5}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, complete := h.Between(tt.from, tt.to)
			var got []int
			for _, r := range recs {
				got = append(got, r.Index)
				if r.Seq != uint64(r.Index+1) {
					t.Errorf("record of index %d has sequence %d", r.Index, r.Seq)
				}
			}
			if !slices.Equal(got, tt.wantIndexes) || complete != tt.wantComplete {
				t.Errorf("indexes %v complete %v, want %v %v", got, complete, tt.wantIndexes, tt.wantComplete)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	recs := []Record{
		{Kind: Down, Name: "ppp0", Downs: 1},
		{Kind: Up, Name: "ppp0"},
		{Kind: Renamed, Name: "wan0", OldName: "eth1"},
		{Kind: Gap, Name: "ppp0", Downs: 2},
		{Kind: Gone, Name: "wan0", Downs: 1},
	}
	s := Summarize(recs)
	if got := s["ppp0"]; got.Downs != 3 || !got.Touched || len(got.Records) != 3 {
		t.Errorf("ppp0 %+v", got)
	}
	if got := s["eth1"]; got.Downs != 0 || !got.Touched {
		t.Errorf("eth1 (renamed away) %+v", got)
	}
	if got := s["wan0"]; got.Downs != 1 || len(got.Records) != 2 {
		t.Errorf("wan0 %+v", got)
	}
	if s["lan0"].Touched {
		t.Error("a link no record names is touched")
	}
}
