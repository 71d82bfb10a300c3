package netnsx_test

import (
	"testing"

	"github.com/uplinkd/uplinkd/internal/lab"
	"github.com/uplinkd/uplinkd/internal/netnsx"
)

// BenchmarkDo: the cost of one switch into a namespace and back (a fresh
// goroutine locked to its thread, two setns calls).
//
// Run: go test -run '^$' -bench Do ./internal/netnsx
func BenchmarkDo(b *testing.B) {
	l := lab.NewT(b, lab.Spec{Uplinks: []lab.UplinkSpec{{Name: "ppp0", Kind: lab.KindPPP}}})
	ns, err := l.NsHandle(l.Router)
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	b.ResetTimer()
	for range b.N {
		if err := netnsx.Do(ns, func() error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
