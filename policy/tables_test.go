package policy

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLoadTables(t *testing.T) {
	got, err := LoadTables(
		"testdata/rt_tables/rt_tables",
		"testdata/rt_tables/rt_tables.d",
		"testdata/rt_tables/does-not-exist",
	)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{
		"local": 255, "main": 254, "default": 253, "unspec": 0,
		"PPP0": 200, // rt_tables.d/uplinkd.conf says 202, but rt_tables came first
		"PPP1": 0xc9,
		"wan":  300, // ignored.txt is not a *.conf file
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadTables = %v, want %v", got, want)
	}
}

func TestLoadTablesNothingThere(t *testing.T) {
	got, err := LoadTables(filepath.Join(t.TempDir(), "rt_tables"), filepath.Join(t.TempDir(), "rt_tables.d"))
	if err != nil || len(got) != 0 {
		t.Errorf("LoadTables = %v, %v; want empty, nil", got, err)
	}
}

func TestLoadTablesMalformed(t *testing.T) {
	_, err := LoadTables("testdata/rt_tables/bad")
	if err == nil || !strings.Contains(err.Error(), "testdata/rt_tables/bad:2:") {
		t.Errorf("LoadTables = %v, want an error at line 2", err)
	}
}

func TestParseTableID(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"200", 200, true},
		{"0xc8", 200, true},
		{"010", 10, true}, // iproute2 reads decimal, not octal
		{"4294967295", 4294967295, true},
		{"4294967296", 0, false},
		{"-1", 0, false},
		{"PPP0", 0, false},
	} {
		got, err := parseTableID(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("parseTableID(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
