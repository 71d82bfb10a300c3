package publish

import (
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"sync"
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

// lockedBuffer is a goroutine-safe output buffer for child processes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
