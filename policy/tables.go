package policy

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// DefaultTablePaths are where iproute2 keeps routing table names. /etc comes
// first so that a local definition wins over the distribution's default.
var DefaultTablePaths = []string{
	"/etc/iproute2/rt_tables",
	"/etc/iproute2/rt_tables.d",
	"/usr/share/iproute2/rt_tables",
	"/usr/share/iproute2/rt_tables.d",
}

// LoadTables reads iproute2 rt_tables files ("200 PPP0" per line, # comments)
// and returns name → table number. A directory contributes its *.conf files in
// name order; missing paths are skipped because most hosts have only some of
// them. When a name is defined twice, the first definition wins.
func LoadTables(paths ...string) (map[string]int64, error) {
	tables := map[string]int64{}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		files := []string{p}
		if fi.IsDir() {
			if files, err = filepath.Glob(filepath.Join(p, "*.conf")); err != nil {
				return nil, err
			}
			sort.Strings(files)
		}
		for _, f := range files {
			if err := readTables(f, tables); err != nil {
				return nil, err
			}
		}
	}
	return tables, nil
}

func readTables(path string, tables map[string]int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		id, err := parseTableID(fields[0])
		if len(fields) != 2 || err != nil {
			return fmt.Errorf("%s:%d: want \"NUMBER NAME\", got %q", path, n, sc.Text())
		}
		if _, dup := tables[fields[1]]; !dup {
			tables[fields[1]] = id
		}
	}
	return sc.Err()
}

// parseTableID reads a table number the way iproute2 does: decimal, or hex
// with a 0x prefix (a leading 0 does not mean octal). The kernel's table
// numbers are 32 bits unsigned: int64 holds them on 32-bit platforms too
// (an int there turned 4294967295 into -1).
func parseTableID(s string) (int64, error) {
	base := 10
	if h, ok := strings.CutPrefix(s, "0x"); ok {
		s, base = h, 16
	}
	v, err := strconv.ParseUint(s, base, 32)
	return int64(v), err
}
