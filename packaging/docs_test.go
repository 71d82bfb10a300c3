package packaging_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/uplinkd/uplinkd/policy"
)

// lintianClean runs Debian's lintian on the .deb at its default level and
// fails on every error or warning (overrides, each with its reason, are in
// packaging/lintian-overrides).
func lintianClean(t *testing.T, deb string) {
	t.Helper()
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Fatalf("lintian missing (scripts/deps.sh installs it): %v", err)
	}
	out, err := exec.Command("lintian", "--tag-display-limit", "0", deb).CombinedOutput()
	var bad []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
			bad = append(bad, line)
		}
	}
	// lintian exits 2 on errors, and 1 when it could not run at all.
	if len(bad) > 0 || err != nil {
		t.Errorf("lintian %s: %v\n%s", filepath.Base(deb), err, out)
	}
	t.Logf("lintian %s: %d errors or warnings", filepath.Base(deb), len(bad))
}

// manPages renders the packaged man pages as man(1) does, with its
// warnings on, and checks the whatis line lexgrog (mandb) reads.
func manPages(t *testing.T, x string) {
	t.Helper()
	for _, tc := range []struct{ page, whatis string }{
		{"usr/share/man/man8/uplinkd.8.gz", "uplinkd - keeps the uplinks of a Linux gateway working"},
		{"usr/share/man/man5/uplinkd.toml.5.gz", "uplinkd.toml - configuration of uplinkd, the gateway uplink daemon"},
	} {
		path := filepath.Join(x, tc.page)
		cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", path)
		cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANWIDTH=80")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || stderr.Len() > 0 || len(out) == 0 {
			t.Errorf("man --warnings -l %s: %v, %d bytes\n%s", tc.page, err, len(out), stderr.String())
		}
		plain := exec.Command("man", "-l", path)
		plain.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANWIDTH=80", "MAN_KEEP_FORMATTING=")
		text, err := plain.Output()
		if err != nil {
			t.Fatalf("man -l %s: %v", tc.page, err)
		}
		if !bytes.Contains(text, []byte(testVersion)) {
			t.Errorf("%s does not show the version %s in its footer", tc.page, testVersion)
		}
		if got := strings.TrimSpace(runOK(t, "lexgrog", path)); !strings.HasSuffix(got, `"`+tc.whatis+`"`) {
			t.Errorf("lexgrog %s: %s, want the whatis %q", tc.page, got, tc.whatis)
		}
	}
}

// TestManConfigKeys: uplinkd.toml(5) documents every key the loader
// accepts, under its table's heading, and no key that does not exist. The
// keys come from policy.Config's TOML tags, which are the loader's (it
// rejects every other key).
func TestManConfigKeys(t *testing.T) {
	md, err := os.ReadFile(filepath.Join(repoRoot(t), "docs/man/uplinkd.toml.5.md"))
	if err != nil {
		t.Fatal(err)
	}
	// "### [table]" or "### [[table]]" headings; keys are the definition
	// terms "`key` (...)" under them.
	doc := map[string][]string{}
	text := map[string]string{}
	table := ""
	heading := regexp.MustCompile(`^### \[\[?([a-z_.0-9]+)\]\]?$`)
	term := regexp.MustCompile("^`([a-z_0-9]+)` \\(")
	for _, line := range strings.Split(string(md), "\n") {
		if m := heading.FindStringSubmatch(line); m != nil {
			table = m[1]
			doc[table] = nil
			continue
		}
		if strings.HasPrefix(line, "#") {
			table = ""
			continue
		}
		if table == "" {
			continue
		}
		text[table] += line + "\n"
		if m := term.FindStringSubmatch(line); m != nil {
			doc[table] = append(doc[table], m[1])
		}
	}

	code := map[string][]string{}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for f := range typ.Fields() {
			key, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if key == "" || key == "-" {
				continue
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			path := key
			if prefix != "" {
				path = prefix + "." + key
			}
			isTable := ft.Kind() == reflect.Struct && ft.PkgPath() == reflect.TypeFor[policy.Config]().PkgPath()
			if isTable {
				if _, ok := doc[path]; ok || prefix == "" {
					walk(path, ft)
					continue
				}
				// An inline table (hosts, allow, limit, backends): its
				// keys are described with the key that holds it.
				for sub := range ft.Fields() {
					sk, _, _ := strings.Cut(sub.Tag.Get("toml"), ",")
					if sk != "" && sk != "-" && !strings.Contains(text[prefix], "`"+sk+"`") &&
						!strings.Contains(text[prefix], sk+" =") && !strings.Contains(text[prefix], " "+sk+",") &&
						!strings.Contains(text[prefix], " "+sk+" }") {
						t.Errorf("[%s] %s: the inline key %q is not described", prefix, key, sk)
					}
				}
			}
			code[prefix] = append(code[prefix], key)
		}
	}
	walk("", reflect.TypeFor[policy.Config]())
	delete(code, "")

	for table, keys := range code {
		got := doc[table]
		if got == nil {
			t.Errorf("[%s] has no section in uplinkd.toml(5)", table)
			continue
		}
		for _, k := range keys {
			if !slices.Contains(got, k) {
				t.Errorf("[%s] %s is not documented in uplinkd.toml(5)", table, k)
			}
		}
		for _, k := range got {
			if !slices.Contains(keys, k) {
				t.Errorf("uplinkd.toml(5) documents [%s] %s, which the loader does not know", table, k)
			}
		}
	}
	for table := range doc {
		if _, ok := code[table]; !ok {
			t.Errorf("uplinkd.toml(5) has a section [%s], which is no table of the config", table)
		}
	}
}

// TestManConfigExample: the example in uplinkd.toml(5) loads without a
// problem or a warning.
func TestManConfigExample(t *testing.T) {
	md, err := os.ReadFile(filepath.Join(repoRoot(t), "docs/man/uplinkd.toml.5.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(md), "\n# EXAMPLES\n")
	m := regexp.MustCompile("(?s)```\n(.*?)```").FindStringSubmatch(after)
	if !ok || m == nil {
		t.Fatal("no example in the EXAMPLES section")
	}
	path := filepath.Join(t.TempDir(), "uplinkd.toml")
	if err := os.WriteFile(path, []byte(m[1]), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := policy.Load(path)
	if err != nil {
		t.Fatalf("the man page's example: %v", err)
	}
	if len(cfg.Warnings) > 0 || len(cfg.Uplinks) != 2 {
		t.Errorf("the man page's example: %d uplinks, warnings %v", len(cfg.Uplinks), cfg.Warnings.Lines())
	}
}

// TestBashCompletion runs the completion script in a real bash as bash
// would on TAB.
func TestBashCompletion(t *testing.T) {
	script := filepath.Join(repoRoot(t), "packaging/bash-completion/uplinkd")
	dir := t.TempDir()
	// Two uplinks; a publisher's and a rule's name are no uplink names.
	conf := filepath.Join(dir, "u.toml")
	if err := os.WriteFile(conf, []byte(`[daemon]
[[uplink]]
name = "ppp0" # the first line
table = 200
[uplink.check]
[[uplink.publish]]
name = "dyn-1"
[[ uplink ]]
  name='wlan0'
[[uplink.hook]]
[[rule]]
name = "p2p"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		words []string
		want  []string
	}{
		{[]string{"uplinkd", ""}, []string{"--help", "--version", "check", "drain", "event", "flush", "help", "plan", "reconnect", "reload", "run", "status", "undrain", "version"}},
		{[]string{"uplinkd", "drain", "--config", conf, ""}, []string{"ppp0", "wlan0"}},
		{[]string{"uplinkd", "drain", "--"}, []string{"--config", "--force", "--help", "--socket"}},
		{[]string{"uplinkd", "undrain", "--config", conf, "p"}, []string{"ppp0"}},
		{[]string{"uplinkd", "undrain", "--"}, []string{"--config", "--help", "--socket"}},
		{[]string{"uplinkd", "re"}, []string{"reconnect", "reload"}},
		{[]string{"uplinkd", "reconnect", "--config", conf, ""}, []string{"ppp0", "wlan0"}},
		{[]string{"uplinkd", "reconnect", "--config", "=", conf, "w"}, []string{"wlan0"}},
		{[]string{"uplinkd", "reconnect", "--config", filepath.Join(dir, "missing.toml"), ""}, nil},
		{[]string{"uplinkd", "check", "--"}, []string{"--condition", "--config", "--help", "--log-format", "--strict"}},
		{[]string{"uplinkd", "run", "--log-format", ""}, []string{"auto", "journal", "json", "text"}},
		{[]string{"uplinkd", "status", "--"}, []string{"--config", "--help", "--json", "--socket"}},
		{[]string{"uplinkd", "event", "--state", ""}, []string{"down", "up"}},
		{[]string{"uplinkd", "event", "--role", "m"}, []string{"master"}},
		{[]string{"uplinkd", "help", ""}, []string{"check", "drain", "event", "flush", "help", "plan", "reconnect", "reload", "run", "status", "undrain", "version"}},
		{[]string{"uplinkd", "check", filepath.Join(dir, "u.t")}, []string{conf}},
	} {
		var quoted []string
		for _, w := range tc.words {
			quoted = append(quoted, "'"+w+"'")
		}
		prog := `source "$1"; COMP_WORDS=(` + strings.Join(quoted, " ") + `); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _uplinkd; printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.Command("bash", "-c", prog, "bash", script).CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.words, err, out)
		}
		got := strings.Fields(string(out))
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("completing %q: %q, want %q", tc.words, got, tc.want)
		}
	}
}
