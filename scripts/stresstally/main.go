// Command stresstally reads the `go test -json` output of several runs of
// the same suite (one file per run, named on the command line) and prints,
// for every test that failed at least once, how often it failed out of how
// often it ran. It exits 1 if any run had a failure (a test, or a package
// that failed without a failing test: a build error, a panic, a timeout),
// 2 on bad input. scripts/stress-test.sh (`make stress-test`) uses it.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is the part of test2json's output that the tally needs.
type event struct {
	Action  string
	Package string
	Test    string
}

// count is one test's (or package's) runs and failures.
type count struct{ runs, fails int }

// tally holds the counts over all runs, keyed by "package TestName"; a
// package's own result is keyed by the package with Test empty.
type tally struct {
	tests map[string]*count
	// failedRuns counts the runs in which anything failed.
	failedRuns, runs int
}

func newTally() *tally { return &tally{tests: map[string]*count{}} }

// addRun reads one run's -json stream.
func (t *tally) addRun(r io.Reader) error {
	t.runs++
	failed := false
	// Packages whose own result was fail, and the packages in which a
	// test failed: a package that failed with no failing test (a panic in
	// TestMain, a timeout, a build error) gets a row of its own.
	pkgFailed := map[string]bool{}
	testFailed := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue // `go test` prints build errors outside the JSON stream
		}
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			return fmt.Errorf("bad test2json line %q: %w", line, err)
		}
		if e.Action != "pass" && e.Action != "fail" {
			continue
		}
		if e.Test == "" {
			if e.Action == "fail" {
				pkgFailed[e.Package] = true
			}
			continue
		}
		c := t.get(e.Package + " " + e.Test)
		c.runs++
		if e.Action == "fail" {
			c.fails++
			failed = true
			testFailed[e.Package] = true
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	for p := range pkgFailed {
		failed = true
		if !testFailed[p] {
			c := t.get(p + " (package)")
			c.runs++
			c.fails++
		}
	}
	if failed {
		t.failedRuns++
	}
	return nil
}

func (t *tally) get(k string) *count {
	c := t.tests[k]
	if c == nil {
		c = &count{}
		t.tests[k] = c
	}
	return c
}

// report writes the table of failing tests, most failures first.
func (t *tally) report(w io.Writer) {
	var names []string
	for k, c := range t.tests {
		if c.fails > 0 {
			names = append(names, k)
		}
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := t.tests[names[i]], t.tests[names[j]]
		if a.fails != b.fails {
			return a.fails > b.fails
		}
		return names[i] < names[j]
	})
	fmt.Fprintf(w, "stress: %d runs, %d tests, %d runs with a failure\n", t.runs, len(t.tests), t.failedRuns)
	if len(names) == 0 {
		fmt.Fprintln(w, "stress: no test failed")
		return
	}
	width := len("TEST")
	for _, n := range names {
		width = max(width, len(n))
	}
	fmt.Fprintf(w, "%-*s  %s\n", width, "TEST", "FAILED/RUNS")
	fmt.Fprintf(w, "%s  %s\n", strings.Repeat("-", width), strings.Repeat("-", len("FAILED/RUNS")))
	for _, n := range names {
		c := t.tests[n]
		fmt.Fprintf(w, "%-*s  %d/%d\n", width, n, c.fails, c.runs)
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: stresstally RUN.json...")
		os.Exit(2)
	}
	t := newTally()
	for _, name := range os.Args[1:] {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "stresstally:", err)
			os.Exit(2)
		}
		err = t.addRun(f)
		f.Close()
		if err != nil {
			fmt.Fprintf(os.Stderr, "stresstally: %s: %v\n", name, err)
			os.Exit(2)
		}
	}
	t.report(os.Stdout)
	if t.failedRuns > 0 {
		os.Exit(1)
	}
}
