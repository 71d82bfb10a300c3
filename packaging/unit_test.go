package packaging_test

import (
	"bufio"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/uplinkd/uplinkd/policy"
)

// TestDefaultConfigIsValidAndHasNoUplink: the conffile the package installs
// parses with the real loader, and describes no uplink, so an installed but
// unedited uplinkd never touches the network.
func TestDefaultConfigIsValidAndHasNoUplink(t *testing.T) {
	cfg, err := policy.Parse("uplinkd.toml", mustRead(t, "uplinkd.toml"), nil)
	if err != nil {
		t.Fatalf("packaging/uplinkd.toml: %v", err)
	}
	if len(cfg.Uplinks) != 0 || len(cfg.Rules) != 0 {
		t.Errorf("packaging/uplinkd.toml has %d uplinks and %d rules active, want none", len(cfg.Uplinks), len(cfg.Rules))
	}
}

// unitSettings reads a unit file into key -> values (a key may repeat).
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settings := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not KEY=VALUE", path, line)
		}
		settings[k] = append(settings[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return settings
}

// TestUnitKeepsWhatPppdAndHooksNeed pins the unit's choices that the issue
// was about: a restart must not kill the pppd lines uplinkd started, a bad
// config must not be retried, and the sandbox must leave pppd, wpa_cli and
// the publish hook what they need. systemd-analyze (TestDeb) checks syntax;
// this checks intent.
func TestUnitKeepsWhatPppdAndHooksNeed(t *testing.T) {
	s := unitSettings(t, "systemd/uplinkd.service")
	for key, want := range map[string]string{
		"Type":                     "notify",
		"NotifyAccess":             "main",
		"WatchdogSec":              "30s",
		"Restart":                  "on-failure",
		"RestartPreventExitStatus": "78",
		"KillMode":                 "process",
		"ExecStart":                "/usr/sbin/uplinkd run --config /etc/uplinkd/uplinkd.toml",
		// An unconfigured install is skipped, not failed, at boot; same file as ExecStart.
		"ExecCondition":            "/usr/sbin/uplinkd check --condition --config /etc/uplinkd/uplinkd.toml",
		"ExecReload":               "/usr/sbin/uplinkd reload --config /etc/uplinkd/uplinkd.toml", // the socket of ExecStart's config
		"RuntimeDirectory":         "uplinkd",
		"RuntimeDirectoryMode":     "0755",
		"RuntimeDirectoryPreserve": "yes", // the HA track file keeps its "stopped" value
		"StateDirectory":           "uplinkd",
		"ProtectHome":              "read-only", // the publish hook reads /root/.ssh
		"ProtectSystem":            "yes",       // pppd and usepeerdns write /etc, /var/run, /var/log
		"NoNewPrivileges":          "yes",
		"DeviceAllow":              "/dev/ppp rw",
		"CapabilityBoundingSet":    "CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE",
		"RestrictAddressFamilies":  "AF_UNIX AF_NETLINK AF_INET AF_INET6 AF_PACKET AF_PPPOX",
		"ReadWritePaths":           "/proc/sys/net",
		"SystemCallFilter":         "@system-service",
		"SystemCallErrorNumber":    "EPERM",
		"ProtectKernelTunables":    "yes",
		"MemoryDenyWriteExecute":   "yes",
		"SystemCallArchitectures":  "native",
		"RestrictNamespaces":       "yes",
		"LockPersonality":          "yes",
		"ProtectControlGroups":     "yes",
		"ProtectKernelModules":     "yes",
		"RestrictRealtime":         "yes",
		"RestrictSUIDSGID":         "yes",
		"ProtectClock":             "yes",
		"ProtectHostname":          "yes",
		"ProtectKernelLogs":        "yes",
	} {
		if got := s[key]; !slices.Equal(got, []string{want}) {
			t.Errorf("%s=%q, want %q", key, got, want)
		}
	}
	// Each of these would break pppd, wpa_cli, a hook or pppd's scripts; the
	// unit's comments say why.
	for _, key := range []string{
		"PrivateDevices", "PrivateTmp", "PrivateNetwork", "UMask", "User", "DynamicUser",
		"ConfigurationDirectory", "AmbientCapabilities", "ProcSubset",
	} {
		if v, ok := s[key]; ok {
			t.Errorf("%s=%q set; see the unit's comments for why it must not be", key, v)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
