package packaging_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// mdLink is an inline markdown link or image: [text](target) or
// [text](target "title").
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)

// docLinks returns the link targets of a markdown file with their line
// numbers, outside fenced code blocks and code spans.
func docLinks(t *testing.T, path string) map[string][]int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	links := map[string][]int{}
	fenced := false
	for i, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		// Drop code spans: `[x](y)` inside backticks is not a link.
		parts := strings.Split(line, "`")
		var text strings.Builder
		for j := 0; j < len(parts); j += 2 {
			text.WriteString(parts[j])
			text.WriteString(" ")
		}
		for _, m := range mdLink.FindAllStringSubmatch(text.String(), -1) {
			links[m[1]] = append(links[m[1]], i+1)
		}
	}
	return links
}

// headingAnchors are the GitHub-style anchors of a markdown file's headings.
func headingAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	keep := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		a := strings.ReplaceAll(keep.ReplaceAllString(strings.ToLower(h), ""), " ", "-")
		anchors[a] = true
	}
	return anchors
}

// TestDocLinksResolve: every relative link in README.md and docs/ (the
// man page sources included) names a file that exists, and a #fragment a
// heading in it. The package ships README.md and docs/ with the same
// layout (nfpm.yaml), so the links must also stay inside them: a link to
// contrib/ or the source would work on GitHub and be dead in
// /usr/share/doc/uplinkd.
func TestDocLinksResolve(t *testing.T) {
	root := repoRoot(t)
	files := []string{filepath.Join(root, "README.md")}
	for _, glob := range []string{"docs/*.md", "docs/man/*.md"} {
		m, _ := filepath.Glob(filepath.Join(root, glob))
		files = append(files, m...)
	}
	checked := 0
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		for target, lines := range docLinks(t, f) {
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			file, frag, _ := strings.Cut(target, "#")
			dest := f
			if file != "" {
				dest = filepath.Join(filepath.Dir(f), filepath.FromSlash(file))
			}
			destRel, err := filepath.Rel(root, dest)
			if err != nil || strings.HasPrefix(destRel, "..") {
				t.Errorf("%s:%v: link %q leaves the repository", rel, lines, target)
				continue
			}
			if _, err := os.Stat(dest); err != nil {
				t.Errorf("%s:%v: link %q: %v", rel, lines, target, err)
				continue
			}
			if destRel != "README.md" && !strings.HasPrefix(destRel, "docs"+string(filepath.Separator)) {
				t.Errorf("%s:%v: link %q points at %s, which the package does not ship (only README.md and docs/): name it as `code` instead", rel, lines, target, destRel)
			}
			if frag != "" && strings.HasSuffix(dest, ".md") && !headingAnchors(t, dest)[frag] {
				t.Errorf("%s:%v: link %q: no heading with anchor #%s in %s", rel, lines, target, frag, destRel)
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d relative links found in README.md and docs/: is the link pattern broken?", checked)
	}
}
