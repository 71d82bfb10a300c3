package daemon

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLabPublishAfterRedial: a command publisher of ppp0 runs once for the
// first address and, after a redial, exactly once with the new one; its
// result fires the `publish` hook event and shows in the status.
func TestLabPublishAfterRedial(t *testing.T) {
	l := dualLab(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "published")
	hookOut := filepath.Join(dir, "hooked")
	pub := filepath.Join(dir, "publish")
	hook := filepath.Join(dir, "hook")
	for path, body := range map[string]string{
		pub:  fmt.Sprintf("#!/bin/sh\necho \"$UPLINKD_EVENT $UPLINKD_UPLINK $UPLINKD_IFACE $UPLINKD_PUBLISHER $UPLINKD_NEW_IP $UPLINKD_OLD_IP $1\" >> %s\n", out),
		hook: fmt.Sprintf("#!/bin/sh\n[ \"$UPLINKD_EVENT\" = publish ] && echo \"$UPLINKD_RESULT $UPLINKD_NEW_IP\" >> %s\nexit 0\n", hookOut),
	} {
		if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := strings.Replace(labConfig, "table = 200\nrule_priority = 200\n", fmt.Sprintf(`table = 200
rule_priority = 200
  [[uplink.publish]]
  kind = "command"
  command = [%q, "arg1"]
  settle = "100ms"
  min_interval = "100ms"
  [[uplink.hook]]
  on = ["publish"]
  command = [%q]
`, pub, hook), 1)
	cfg = fmt.Sprintf("[daemon]\nstate_dir = %q\n", filepath.Join(dir, "state")) + cfg
	r := start(t, l, writeConfig(t, cfg))
	old := l.UplinkAddr("ppp0")
	lines := func(path string) []string {
		data, _ := os.ReadFile(path)
		return strings.Split(strings.TrimSpace(string(data)), "\n")
	}
	r.eventually("the first address published", func() bool { return len(lines(out)) == 1 && lines(out)[0] != "" })
	if got, want := lines(out)[0], fmt.Sprintf("publish ppp0 ppp0 command-1 %s  arg1", old); got != want {
		t.Errorf("first publish: %q, want %q", got, want)
	}
	res, err := l.Redial("ppp0")
	if err != nil {
		t.Fatal(err)
	}
	r.eventually("the new address published", func() bool { return len(lines(out)) >= 2 })
	// Nothing more is due: the new address is published, none pending,
	// and no retry scheduled (at most the far-off refresh): a repeat could
	// only come from a new event.
	r.eventually("the publisher idle with the new address", func() bool {
		st := r.statusJSON()
		if len(st.Publishers) != 1 {
			return false
		}
		p := st.Publishers[0]
		return p.Address == res.New && !p.Pending.IsValid() && p.Result == "ok" &&
			(p.NextTry.IsZero() || time.Until(p.NextTry) > time.Minute)
	})
	got := lines(out)
	if want := fmt.Sprintf("publish ppp0 ppp0 command-1 %s %s arg1", res.New, old); len(got) != 2 || got[1] != want {
		t.Errorf("publishes: %q, want the first and then exactly %q", got, want)
	}
	r.eventually("the publish hook event", func() bool {
		h := lines(hookOut)
		return len(h) == 2 && h[1] == "ok "+res.New.String()
	})
	st := r.statusJSON()
	if len(st.Publishers) != 1 || st.Publishers[0].Address != res.New || st.Publishers[0].Result != "ok" || st.Publishers[0].Name != "command-1" {
		t.Errorf("status publishers: %+v", st.Publishers)
	}
}

// TestLabMetrics scrapes the metrics endpoint of the in-process daemon.
func TestLabMetrics(t *testing.T) {
	l := dualLab(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := startWith(t, l, writeConfig(t, labConfig), ln)
	addr := r.d.x.metricsAddr
	if addr == nil {
		t.Fatal("metrics not listening")
	}
	scrape := func() string {
		resp, err := http.Get("http://" + addr.String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	want := []string{
		`uplinkd_uplink_state{uplink="ppp0",state="up"} 1`,
		`uplinkd_uplink_state{uplink="ppp1",state="up"} 1`,
		`uplinkd_uplink_state{uplink="ppp1",state="down"} 0`,
	}
	r.eventually("both uplinks up in the metrics", func() bool {
		body := scrape()
		for _, w := range want {
			if !strings.Contains(body, w) {
				return false
			}
		}
		return true
	})
	if _, err := l.DropLink("ppp1"); err != nil {
		t.Fatal(err)
	}
	r.eventually("ppp1 down in the metrics, with a transition", func() bool {
		body := scrape()
		return strings.Contains(body, `uplinkd_uplink_state{uplink="ppp1",state="down"} 1`) &&
			strings.Contains(body, `uplinkd_uplink_transitions_total{uplink="ppp1"} 1`)
	})
	var passes int
	sc := bufio.NewScanner(strings.NewReader(scrape()))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "uplinkd_passes_total "); ok {
			passes, _ = strconv.Atoi(v)
		}
	}
	if passes < 2 {
		t.Errorf("uplinkd_passes_total %d, want at least the first pass and ppp1's", passes)
	}
}
