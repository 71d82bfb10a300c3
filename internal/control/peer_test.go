package control

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

func TestParseGroups(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []uint32
		wantErr  bool
	}{
		{"several", "Name:\tx\nUid:\t1\t1\t1\t1\nGroups:\t4 24 27 1000 \nNgid:\t0\n", []uint32{4, 24, 27, 1000}, false},
		{"none", "Name:\tx\nGroups:\t\n", nil, false},
		{"missing", "Name:\tx\n", nil, true},
		{"garbage", "Groups:\t4 x\n", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseGroups([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestAllowed(t *testing.T) {
	proc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(proc, "77"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proc, "77", "status"), []byte("Groups:\t100 4242\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const self = 500
	for _, tc := range []struct {
		name  string
		p     peer
		group int
		want  bool
	}{
		{"root", peer{pid: 1, uid: 0, gid: 0}, -1, true},
		{"daemon's own user", peer{pid: 1, uid: self, gid: 9}, -1, true},
		{"other user, no group configured", peer{pid: 77, uid: 1000, gid: 4242}, -1, false},
		{"primary group", peer{pid: 1, uid: 1000, gid: 4242}, 4242, true},
		{"supplementary group", peer{pid: 77, uid: 1000, gid: 1000}, 4242, true},
		{"not a member", peer{pid: 77, uid: 1000, gid: 1000}, 4243, false},
		{"peer gone", peer{pid: 78, uid: 1000, gid: 1000}, 4242, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := allowed(tc.p, tc.group, self, proc); got != tc.want {
				t.Errorf("allowed(%+v, group %s) = %v, want %v", tc.p, strconv.Itoa(tc.group), got, tc.want)
			}
		})
	}
}
