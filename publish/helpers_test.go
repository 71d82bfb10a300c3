package publish

import (
	"io"
	"log/slog"
	"net/netip"
	"net/url"
)

// Test helpers of the publishers (they came from package hooks with them).

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
