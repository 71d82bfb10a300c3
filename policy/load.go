package policy

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Problem is one config error or warning with its position.
type Problem struct {
	File      string
	Line, Col int
	Msg       string
	// Warning marks a harmless problem: Load still returns the Config,
	// with the problem in Config.Warnings.
	Warning bool
}

// String formats the problem the way compilers do, so editors can jump to it.
func (p Problem) String() string {
	if p.Warning {
		return fmt.Sprintf("%s:%d:%d: warning: %s", p.File, p.Line, p.Col, p.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Col, p.Msg)
}

// Problems is returned by Load and Parse when anything is wrong.
type Problems []Problem

// MaxReported is how many problems Lines lists before summarising the rest:
// a file of garbage must not bury the first mistakes under thousands of lines.
const MaxReported = 50

// Lines is one line per problem, in file order, at most MaxReported of them
// and then "... and N more problems".
func (ps Problems) Lines() []string {
	n := min(len(ps), MaxReported)
	lines := make([]string, n, n+1)
	for i, p := range ps[:n] {
		lines[i] = p.String()
	}
	if len(ps) > n {
		lines = append(lines, fmt.Sprintf("... and %d more problems", len(ps)-n))
	}
	return lines
}

// Error is Lines joined by newlines.
func (ps Problems) Error() string { return strings.Join(ps.Lines(), "\n") }

// Load reads the config file (see ReadStable), resolves table names from the
// iproute2 databases and user and group names from the system's databases,
// applies defaults and validates. On any error it returns a nil Config: an
// error of type Problems when the file is wrong, another error when it could
// not be read.
func Load(path string) (*Config, error) {
	data, err := ReadStable(path)
	if err != nil {
		return nil, err
	}
	tables, err := LoadTables(DefaultTablePaths...)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, tables)
}

// readAttempts bounds how often ReadStable reads a file that keeps changing;
// readSettle is the pause between two reads that must agree.
const (
	readAttempts = 5
	readSettle   = 10 * time.Millisecond
)

// beforeRead is called before every read of ReadStable; tests change the
// file from it.
var beforeRead = func(attempt int) {}

// ReadStable reads a file that someone may be writing at the same moment (an
// editor saving in place, a config-management run): it stats the file before
// and after each read and reads again until two consecutive reads, readSettle
// apart, agree in size, mtime, inode and content. So a file that is being
// written is not parsed half-written. After readAttempts reads without two
// that agree it gives up with an error. A file that is not a regular file
// (a pipe, /dev/stdin) cannot be read twice and is read once.
func ReadStable(path string) ([]byte, error) {
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return readBounded(path)
	}
	var prev *snapshot
	for i := range readAttempts {
		if i > 0 {
			time.Sleep(readSettle)
		}
		beforeRead(i)
		cur, err := readOnce(path)
		if err != nil {
			return nil, err
		}
		if cur.consistent && prev != nil && prev.stamp == cur.stamp && bytes.Equal(prev.data, cur.data) {
			return cur.data, nil
		}
		prev = nil
		if cur.consistent {
			prev = &cur
		}
	}
	return nil, fmt.Errorf("%s: the file kept changing while it was read (%d reads); try again once it is written", path, readAttempts)
}

// fileStamp is what changes when a file is rewritten.
type fileStamp struct {
	size  int64
	mtime time.Time
	ino   uint64
}

func stamp(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	s := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = st.Ino
	}
	return s, nil
}

// snapshot is one read; consistent is false when the file changed during it.
type snapshot struct {
	data       []byte
	stamp      fileStamp
	consistent bool
}

func readOnce(path string) (snapshot, error) {
	before, err := stamp(path)
	if err != nil {
		return snapshot{}, err
	}
	data, err := readBounded(path)
	if err != nil {
		return snapshot{}, err
	}
	after, err := stamp(path)
	if err != nil {
		return snapshot{}, err
	}
	whole := int64(len(data)) == after.size || len(data) > MaxConfigSize && after.size > MaxConfigSize
	return snapshot{data: data, stamp: after, consistent: before == after && whole}, nil
}

// readBounded reads at most one byte more than MaxConfigSize, enough for
// Parse to refuse the file: a huge file (or an endless pipe) is not read
// into memory.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
}

// MaxConfigSize is the largest config file uplinkd reads: the commented
// reference is 17 KB, and a file of megabytes is a mistake (a log or an
// image written over it) that would only cost time and memory to parse.
const MaxConfigSize = 1 << 20

// utf8BOM is what some Windows editors put at the start of a UTF-8 file.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// Parse is Load on bytes with an explicit table-name map. On any problem it
// returns a nil Config and Problems; warnings alone come back in
// Config.Warnings.
func Parse(path string, data []byte, tables map[string]int64) (*Config, error) {
	if bytes.HasPrefix(data, utf8BOM) {
		// Blank it out rather than cut it, so byte columns on line 1 stay
		// the ones an editor shows; TOML allows leading whitespace.
		data = append([]byte("   "), data[len(utf8BOM):]...)
	}
	l := &loader{file: path, data: data, tables: tables, pos: map[string]int{}, bad: map[string]bool{}, bare: map[string]bool{}}
	cfg := &Config{Path: path}
	if len(data) > MaxConfigSize {
		// Reported where the limit is crossed; nothing is parsed.
		l.problemAt(MaxConfigSize, "the file is larger than %d bytes, the limit of a config file (is it the right file?)", MaxConfigSize)
	} else if root := l.parse(); root != nil {
		l.decode(root, reflect.ValueOf(cfg).Elem(), "", "")
		l.applyDefaults(cfg)
		l.validate(cfg)
		l.resolve(cfg)
	}
	byPos := func(a, b Problem) int { return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col)) }
	slices.SortStableFunc(l.probs, byPos)
	slices.SortStableFunc(l.warns, byPos)
	if len(l.probs) > 0 {
		return nil, l.probs
	}
	cfg.Warnings = l.warns
	return cfg, nil
}

// IsProblems reports whether err is (or wraps) config Problems, as opposed
// to a failure to read the file.
func IsProblems(err error) bool {
	var ps Problems
	return errors.As(err, &ps)
}

type loader struct {
	file   string
	data   []byte
	tables map[string]int64
	probs  Problems
	warns  Problems
	// pos maps the path of every key present in the file, like
	// "uplink[1].check.targets[0]", to the byte offset of its value (of the
	// header, for a table), so that semantic problems point into the file.
	pos map[string]int
	// bad holds the paths of values that could not be decoded, and of keys
	// that an unknown key was probably meant to be. Validation says nothing
	// about them or below them: the mistake is already reported, and their
	// zero value would only be reported again as missing or out of range.
	bad map[string]bool
	// bare holds the paths of prefixes written as a plain address.
	bare map[string]bool
	// lineStarts are the offsets at which lines start, for lineCol.
	lineStarts []int
}

func (l *loader) problemAt(off int, format string, args ...any) {
	line, col := l.lineCol(off)
	l.probs = append(l.probs, Problem{File: l.file, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)})
}

// lineCol turns a byte offset into a 1-based line and byte column, as
// go-toml and the Go tools count them.
func (l *loader) lineCol(off int) (int, int) {
	if l.lineStarts == nil {
		// Built once: a file of garbage has a problem on every line, and
		// counting newlines from the start for each would be quadratic.
		l.lineStarts = []int{0}
		for i, c := range l.data {
			if c == '\n' {
				l.lineStarts = append(l.lineStarts, i+1)
			}
		}
	}
	line, found := slices.BinarySearch(l.lineStarts, off)
	if !found {
		line-- // off is inside the line that starts before it
	}
	return line + 1, off - l.lineStarts[line] + 1
}
