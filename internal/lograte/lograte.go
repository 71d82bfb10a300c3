// Package lograte keeps a flood of one warning from burying every other log
// line. Warnings that a LAN host can trigger at will (a DHCP client asking a
// full pool, a peer declining addresses) go through a Limiter: at most one
// record per key per interval is logged, and the next record logged under
// that key carries "suppressed", the number of records dropped since the
// previous one, so that nothing is lost silently.
//
// The caller chooses the key. A key that a remote host controls (a MAC
// address) would let a flood with changing values through, so callers on
// the LAN side key by the message and carry the source as an attribute; the
// limiter also bounds how many keys it remembers (MaxKeys).
package lograte

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// MaxKeys bounds the keys a Limiter remembers: records under keys beyond it
// share one overflow key, so memory stays bounded whatever the keys are.
const MaxKeys = 1024

// overflowKey is the shared key of records beyond MaxKeys.
const overflowKey = "\x00overflow"

// Limiter lets one record per key and interval through. The zero value is
// not usable; use New. Safe for concurrent use.
type Limiter struct {
	every time.Duration
	// Now is the clock; tests replace it before the first use.
	Now func() time.Time

	mu   sync.Mutex
	keys map[string]*entry
	// swept is when the keys were last swept for idle ones: a sweep is a
	// walk over all of them, at most once per interval, so a flood under
	// new keys costs a map lookup per record.
	swept time.Time
}

type entry struct {
	last       time.Time // when a record under the key was last logged
	suppressed int       // records dropped since then
}

// New returns a Limiter that logs at most one record per key every interval.
func New(every time.Duration) *Limiter {
	return &Limiter{every: every, Now: time.Now, keys: map[string]*entry{}}
}

// Allow reports whether a record under key may be logged now and, if so,
// how many records under key were suppressed since the last one logged.
// A record that is not allowed is counted as suppressed.
func (l *Limiter) Allow(key string) (ok bool, suppressed int) {
	now := l.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.keys[key]
	if e == nil {
		if len(l.keys) >= MaxKeys && now.Sub(l.swept) >= l.every {
			l.swept = now
			l.evictLocked(now)
		}
		if len(l.keys) >= MaxKeys {
			key = overflowKey
			e = l.keys[key]
		}
		if e == nil {
			l.keys[key] = &entry{last: now}
			return true, 0
		}
	}
	if now.Sub(e.last) < l.every {
		e.suppressed++
		return false, 0
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	return true, n
}

// evictLocked forgets the keys whose interval is over and that hold no
// suppressed count: the next record under them is logged anyway.
func (l *Limiter) evictLocked(now time.Time) {
	for k, e := range l.keys {
		if e.suppressed == 0 && now.Sub(e.last) >= l.every {
			delete(l.keys, k)
		}
	}
}

// Log logs msg with args at level under key if Allow lets it through,
// adding "suppressed", N when records were dropped since the last one.
func (l *Limiter) Log(ctx context.Context, log *slog.Logger, level slog.Level, key, msg string, args ...any) {
	if !log.Enabled(ctx, level) {
		return
	}
	ok, n := l.Allow(key)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	log.Log(ctx, level, msg, args...)
}

// Warn is Log at slog.LevelWarn.
func (l *Limiter) Warn(log *slog.Logger, key, msg string, args ...any) {
	l.Log(context.Background(), log, slog.LevelWarn, key, msg, args...)
}
