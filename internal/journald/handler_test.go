package journald

import (
	"log/slog"
	"maps"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

type entry struct {
	msg  string
	pri  journal.Priority
	vars map[string]string
}

func TestHandlerFields(t *testing.T) {
	var got []entry
	send := func(m string, p journal.Priority, v map[string]string) error {
		got = append(got, entry{m, p, maps.Clone(v)})
		return nil
	}
	log := slog.New(New(slog.LevelInfo, send))
	tests := []struct {
		name string
		log  func()
		want entry
	}{
		{"event fields", func() {
			log.Info("address changed", "event", "addr-change", "uplink", "ppp1", "iface", "ppp1", "old_ip", "100.64.1.10", "new_ip", "100.64.1.11")
		}, entry{"address changed", journal.PriInfo, map[string]string{"SYSLOG_IDENTIFIER": "uplinkd",
			"EVENT": "addr-change", "UPLINK": "ppp1", "IFACE": "ppp1", "OLD_IP": "100.64.1.10", "NEW_IP": "100.64.1.11"}}},
		{"duration and level", func() {
			log.Warn("slow", "duration", 1500*time.Microsecond)
		}, entry{"slow", journal.PriWarning, map[string]string{"SYSLOG_IDENTIFIER": "uplinkd", "DURATION": "1.5ms"}}},
		{"with attrs and groups", func() {
			log.With("uplink", "ppp0", "iface", "ppp0").WithGroup("probe").Error("failed", "loss", 0.5)
		}, entry{"failed", journal.PriErr, map[string]string{"SYSLOG_IDENTIFIER": "uplinkd", "UPLINK": "ppp0", "IFACE": "ppp0", "PROBE_LOSS": "0.5"}}},
		{"bad names sanitised", func() {
			log.Info("x", "_trusted", "no", "a-b", "c")
		}, entry{"x", journal.PriInfo, map[string]string{"SYSLOG_IDENTIFIER": "uplinkd", "TRUSTED": "no", "A_B": "c"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got = nil
			tt.log()
			if len(got) != 1 {
				t.Fatalf("got %d entries", len(got))
			}
			if got[0].msg != tt.want.msg || got[0].pri != tt.want.pri || !maps.Equal(got[0].vars, tt.want.vars) {
				t.Errorf("got %+v, want %+v", got[0], tt.want)
			}
		})
	}
	got = nil
	log.Debug("below the level")
	if len(got) != 0 {
		t.Errorf("debug record sent at info level")
	}
}
