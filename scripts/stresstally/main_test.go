package main

import (
	"strings"
	"testing"
)

func TestTally(t *testing.T) {
	pass := `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"pass","Package":"p","Test":"TestB/sub"}
{"Action":"pass","Package":"p","Test":"TestB"}
{"Action":"pass","Package":"p"}
`
	failB := `{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestB/sub","Output":"boom\n"}
{"Action":"fail","Package":"p","Test":"TestB/sub"}
{"Action":"fail","Package":"p","Test":"TestB"}
{"Action":"fail","Package":"p"}
`
	// A timeout panic: the package fails, no test reports fail.
	panicked := `# a line outside the JSON stream
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"fail","Package":"p"}
`
	tests := []struct {
		name       string
		runs       []string
		failedRuns int
		want       []string // lines the report must contain
		notWant    []string
	}{
		{"all pass", []string{pass, pass}, 0, []string{"2 runs, 3 tests, 0 runs with a failure", "no test failed"}, []string{"FAILED/RUNS"}},
		{"one failure", []string{pass, failB, pass}, 1, []string{"p TestB/sub  1/3", "p TestB      1/3"}, []string{"TestA "}},
		{"package failure without a failing test", []string{pass, panicked}, 1, []string{"p (package)  1/1"}, []string{"TestB"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ta := newTally()
			for _, r := range tt.runs {
				if err := ta.addRun(strings.NewReader(r)); err != nil {
					t.Fatal(err)
				}
			}
			if ta.failedRuns != tt.failedRuns {
				t.Errorf("failedRuns = %d, want %d", ta.failedRuns, tt.failedRuns)
			}
			var b strings.Builder
			ta.report(&b)
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("report lacks %q:\n%s", w, b.String())
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(b.String(), w) {
					t.Errorf("report has %q:\n%s", w, b.String())
				}
			}
		})
	}
	if err := newTally().addRun(strings.NewReader("{not json\n")); err == nil {
		t.Error("bad JSON accepted")
	}
}
