// Package journald is a log/slog handler that writes each record to the
// systemd journal as one entry whose attributes are journal fields, so
// `journalctl -u uplinkd EVENT=addr-change UPLINK=ppp1` finds the same
// structured records the text log shows.
package journald

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

// Sender is journal.Send; a seam for tests.
type Sender func(message string, priority journal.Priority, vars map[string]string) error

// Handler sends records to journald. Attribute keys become upper-case
// field names (`old_ip` → OLD_IP; groups join with "_").
type Handler struct {
	level  slog.Leveler
	send   Sender
	attrs  []slog.Attr
	groups []string
}

// New returns a handler for records at level and above, sent with send
// (journal.Send when nil).
func New(level slog.Leveler, send Sender) *Handler {
	if send == nil {
		send = journal.Send
	}
	return &Handler{level: level, send: send}
}

// Available reports whether the process logs to the journal: journald is
// running and stderr is connected to it (as under systemd).
func Available() bool {
	ok, err := journal.StderrIsJournalStream()
	return err == nil && ok && journal.Enabled()
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// Handle implements slog.Handler.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	vars := map[string]string{"SYSLOG_IDENTIFIER": "uplinkd"}
	prefix := strings.Join(h.groups, "_")
	for _, a := range h.attrs {
		addField(vars, "", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		addField(vars, prefix, a)
		return true
	})
	return h.send(r.Message, priority(r.Level), vars)
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	prefix := strings.Join(h.groups, "_")
	for _, a := range attrs {
		if prefix != "" {
			a.Key = prefix + "_" + a.Key
		}
		c.attrs = append(c.attrs, a)
	}
	return &c
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.groups = append(append([]string(nil), h.groups...), name)
	return &c
}

func addField(vars map[string]string, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	key := a.Key
	if prefix != "" {
		key = prefix + "_" + key
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			addField(vars, key, g)
		}
		return
	}
	name := fieldName(key)
	if name == "" {
		return
	}
	switch a.Value.Kind() {
	case slog.KindDuration:
		vars[name] = a.Value.Duration().String()
	case slog.KindTime:
		vars[name] = a.Value.Time().Format(time.RFC3339Nano)
	default:
		vars[name] = fmt.Sprint(a.Value.Any())
	}
}

// fieldName maps a slog key to a journal field name: upper case letters,
// digits and underscores, not starting with an underscore (journald drops
// other names; a leading underscore would claim a trusted field).
func fieldName(key string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(key) {
		switch {
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return strings.TrimLeft(b.String(), "_0123456789")
}

func priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	}
	return journal.PriDebug
}
