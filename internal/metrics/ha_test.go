package metrics

import (
	"strings"
	"testing"
	"time"
)

func TestHARole(t *testing.T) {
	r := New()
	url := serve(t, r)
	if body := scrape(t, url); strings.Contains(body, "uplinkd_ha_role") {
		t.Errorf("role series before any role:\n%s", body)
	}
	since := time.Unix(1700000000, 500_000_000)
	for _, tc := range []struct{ role, one string }{{"backup", "backup"}, {"master", "master"}, {"fault", "fault"}} {
		r.SetHARole(tc.role, since)
		body := scrape(t, url)
		for _, name := range haRoles {
			want := `uplinkd_ha_role{role="` + name + `"} 0`
			if name == tc.one {
				want = `uplinkd_ha_role{role="` + name + `"} 1`
			}
			if !strings.Contains(body, want+"\n") {
				t.Errorf("after SetHARole(%s): missing %q in\n%s", tc.role, want, body)
			}
		}
		if !strings.Contains(body, "uplinkd_ha_role_since_seconds 1.7000000005e+09\n") {
			t.Errorf("since series missing or wrong:\n%s", body)
		}
	}
	var off *Registry
	off.SetHARole("master", since) // metrics off: a no-op, no panic
}
