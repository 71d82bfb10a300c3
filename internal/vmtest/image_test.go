package vmtest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMirrorIn(t *testing.T) {
	tests := []struct {
		name, file, text, want string
	}{
		{"one-line", "sources.list", "deb http://deb.debian.org/debian bookworm main\ndeb http://security.debian.org/debian-security bookworm-security main\n", "http://deb.debian.org/debian"},
		{"one-line with options", "x.list", "# c\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n", "http://mirror.example/debian"},
		{"one-line other suite", "x.list", "deb http://deb.debian.org/debian trixie main\n", ""},
		{"deb822", "debian.sources", "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n", "http://deb.debian.org/debian"},
		{"deb822 security only", "s.sources", "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm\n", ""},
		{"deb822 other suite", "n.sources", "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), tc.file)
			if err := os.WriteFile(p, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := mirrorIn(p); got != tc.want {
				t.Errorf("mirrorIn = %q, want %q", got, tc.want)
			}
		})
	}
}

// The image cache is keyed by the recipe: the same files give the same
// name, any change to a file, its mode or the mirror a new one.
func TestRecipeHash(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	hash := func(mirror string) string {
		t.Helper()
		h, err := RecipeHash(dir, mirror)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	write("build.sh", "echo build\n", 0o755)
	write("files/etc/x.conf", "a=1\n", 0o644)
	base := hash("http://m/debian")
	if again := hash("http://m/debian"); again != base {
		t.Fatalf("same recipe hashed twice: %s, %s", base, again)
	}
	seen := map[string]string{base: "base"}
	for _, change := range []struct {
		name string
		do   func() string
	}{
		{"mirror", func() string { return hash("http://other/debian") }},
		{"content", func() string { write("files/etc/x.conf", "a=2\n", 0o644); return hash("http://m/debian") }},
		{"mode", func() string { write("files/etc/x.conf", "a=2\n", 0o600); return hash("http://m/debian") }},
		{"new file", func() string { write("files/etc/y.conf", "", 0o644); return hash("http://m/debian") }},
	} {
		h := change.do()
		if prev, ok := seen[h]; ok {
			t.Errorf("changing the %s gives the hash of %s (%s)", change.name, prev, h)
		}
		seen[h] = change.name
	}
}
