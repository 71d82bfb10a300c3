package control

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestReconnectStatus: an uplink's reconnect state is in the JSON (absent
// without a reconnector) and in the table, one line per uplink that has a
// reconnector.
func TestReconnectStatus(t *testing.T) {
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	st := sampleStatus()
	st.Uplinks = append(st.Uplinks, st.Uplinks[1], st.Uplinks[1], st.Uplinks[1])
	st.Uplinks[2].Name, st.Uplinks[3].Name, st.Uplinks[4].Name = "dsl", "lte", "fiber"
	st.Uplinks[0].Reconnect = &Reconnect{State: "idle"}
	st.Uplinks[1].Reconnect = &Reconnect{State: "dialling", Since: now.Add(-3 * time.Second), Until: now.Add(27 * time.Second)}
	st.Uplinks[2].Reconnect = &Reconnect{State: "pppd", PID: 373, Until: now.Add(time.Second)}
	st.Uplinks[3].Reconnect = &Reconnect{State: "backoff", Until: now.Add(4 * time.Second)}
	// fiber has no reconnector.

	golden(t, "status_reconnect.txt", []byte(FormatStatus(st, now)))

	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Uplinks []struct {
			Name      string          `json:"name"`
			Reconnect json.RawMessage `json:"reconnect"`
		} `json:"uplinks"`
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ppp0":  `{"state":"idle"}`,
		"wlan":  `{"state":"dialling","since":"2026-11-30T05:59:57Z","until":"2026-11-30T06:00:27Z"}`,
		"dsl":   `{"state":"pppd","pid":373,"until":"2026-11-30T06:00:01Z"}`,
		"lte":   `{"state":"backoff","until":"2026-11-30T06:00:04Z"}`,
		"fiber": ``,
	}
	for _, u := range back.Uplinks {
		if got := strings.TrimSpace(string(u.Reconnect)); got != want[u.Name] {
			t.Errorf("%s: reconnect %s, want %s", u.Name, got, want[u.Name])
		}
	}
}
