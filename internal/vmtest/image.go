package vmtest

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// CacheRoot holds one directory per image recipe (named by the recipe's
// hash) and the downloaded Debian packages shared between recipes.
const CacheRoot = "/var/cache/uplinkd-vm"

// Image is a built VM image: kernel, initramfs and root filesystem.
type Image struct {
	Dir     string
	Kernel  string
	Initrd  string
	RootFS  string
	Built   bool          // built by this call (not found in the cache)
	Elapsed time.Duration // time spent building (zero when cached)
}

// RecipeHash hashes every file of the recipe directory (names, modes and
// contents) and the mirror, so that any change to the recipe names a new
// image directory.
func RecipeHash(recipeDir, mirror string) (string, error) {
	var paths []string
	err := filepath.WalkDir(recipeDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("vmtest: hashing recipe %s: %w", recipeDir, err)
	}
	sort.Strings(paths)
	h := sha256.New()
	fmt.Fprintf(h, "mirror %s\n", mirror)
	for _, p := range paths {
		st, err := os.Lstat(p)
		if err != nil {
			return "", fmt.Errorf("vmtest: hashing recipe: %w", err)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return "", fmt.Errorf("vmtest: hashing recipe: %w", err)
		}
		rel, _ := filepath.Rel(recipeDir, p)
		fmt.Fprintf(h, "%s %o %d\n", rel, st.Mode().Perm(), len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// EnsureImage returns the cached image of the recipe, building it first
// when the cache has none. Concurrent callers serialise on a lock file; a
// build goes to a temporary directory renamed into place only when
// complete, so an interrupted build never looks like an image. Images of
// other recipes are removed after a successful build.
func EnsureImage(recipeDir, mirror string, logf func(string, ...any)) (*Image, error) {
	hash, err := RecipeHash(recipeDir, mirror)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(CacheRoot, 0o755); err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(CacheRoot, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("vmtest: locking the image cache: %w", err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()

	dir := filepath.Join(CacheRoot, hash)
	img := &Image{
		Dir:    dir,
		Kernel: filepath.Join(dir, "vmlinuz"),
		Initrd: filepath.Join(dir, "initrd.img"),
		RootFS: filepath.Join(dir, "rootfs.ext4"),
	}
	if _, err := os.Stat(img.RootFS); err == nil {
		return img, nil
	}

	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	logf("building VM image %s from %s (recipe %s)", hash, mirror, recipeDir)
	start := time.Now()
	cmd := exec.Command("bash", filepath.Join(recipeDir, "build.sh"), tmp, mirror, filepath.Join(CacheRoot, "debs"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("vmtest: image build failed: %w\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		logf("%s", line)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	img.Built, img.Elapsed = true, time.Since(start)

	entries, _ := os.ReadDir(CacheRoot)
	for _, e := range entries {
		if e.IsDir() && e.Name() != hash && e.Name() != "debs" && !strings.HasPrefix(e.Name(), ".") {
			logf("removing the image of an old recipe: %s", e.Name())
			_ = os.RemoveAll(filepath.Join(CacheRoot, e.Name()))
		}
	}
	return img, nil
}

// DebianMirror finds the Debian mirror the host's apt uses for bookworm
// (one-line and deb822 sources), so the image comes from the same place.
// UPLINKD_VM_MIRROR overrides it.
func DebianMirror() (string, error) {
	if m := os.Getenv("UPLINKD_VM_MIRROR"); m != "" {
		return m, nil
	}
	files := []string{"/etc/apt/sources.list"}
	more, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append(files, more...)
	for _, f := range files {
		if m := mirrorIn(f); m != "" {
			return m, nil
		}
	}
	return "", fmt.Errorf("vmtest: no bookworm mirror in /etc/apt/sources.list(.d); set UPLINKD_VM_MIRROR")
}

// mirrorIn returns the first URI in an apt sources file that serves the
// suite bookworm (not the security archive), or "".
func mirrorIn(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var uris, suites []string
	flush := func() string {
		defer func() { uris, suites = nil, nil }()
		for _, s := range suites {
			if s == "bookworm" {
				for _, u := range uris {
					if !strings.Contains(u, "security") {
						return u
					}
				}
			}
		}
		return ""
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		switch {
		case len(fields) == 0:
			if m := flush(); m != "" {
				return m
			}
		case fields[0] == "deb" && strings.HasSuffix(path, ".list") || fields[0] == "deb" && path == "/etc/apt/sources.list":
			// deb [options] URI SUITE COMPONENTS...
			rest := fields[1:]
			if len(rest) > 0 && strings.HasPrefix(rest[0], "[") {
				for len(rest) > 0 && !strings.HasSuffix(rest[0], "]") {
					rest = rest[1:]
				}
				if len(rest) > 0 {
					rest = rest[1:]
				}
			}
			if len(rest) >= 2 && rest[1] == "bookworm" && !strings.Contains(rest[0], "security") {
				return rest[0]
			}
		case strings.EqualFold(fields[0], "URIs:"):
			uris = fields[1:]
		case strings.EqualFold(fields[0], "Suites:"):
			suites = fields[1:]
		}
	}
	return flush()
}
