package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/policy"
)

// TestLoopReloadRace: many reloads at once (the control socket, SIGHUP and
// the file watch can all ask), while the file is swapped between two good
// configs and a broken one. Every reload returns (none hangs), a broken
// file is refused with its reason and leaves the config in force, the loop
// keeps running, and the last good file read is the one that counts.
func TestLoopReloadRace(t *testing.T) {
	verifyNoLeaks(t)
	withRule := fakeConfig("", "")
	withoutRule := withRule[:strings.Index(withRule, "[[rule]]")]
	broken := "[[uplink]\nname = "
	l := startLoop(t, loopOpts{config: withRule, obs: twoPPP()})

	// Atomic swaps (write a temporary file, rename): each reload reads one
	// whole version.
	swap := func(text string) {
		tmp := filepath.Join(filepath.Dir(l.cfgPath), ".swap")
		if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
			t.Error(err)
			return
		}
		if err := os.Rename(tmp, l.cfgPath); err != nil {
			t.Error(err)
		}
	}
	const reloaders, enough = 8, 20
	var (
		wg                 sync.WaitGroup
		mu                 sync.Mutex
		accepted, refused  int
		changing           int
		unexpected         []error
		stopSwap, swapDone = make(chan struct{}), make(chan struct{})
	)
	go func() {
		defer close(swapDone)
		versions := []string{withRule, broken, withoutRule, broken}
		for i := 0; ; i++ {
			select {
			case <-stopSwap:
				return
			default:
			}
			swap(versions[i%len(versions)])
			// An editor saves now and then, not in a tight loop: a file
			// that never holds still for readSettle is refused as such.
			time.Sleep(30 * time.Millisecond)
		}
	}()
	stopReload := make(chan struct{})
	total := 0
	for range reloaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stopReload:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := l.d.Reload(ctx)
				cancel()
				mu.Lock()
				switch {
				case err == nil:
					accepted++
				case strings.Contains(err.Error(), "kept changing while it was read"):
					changing++
					refused++
				case policy.IsProblems(err), IsConfigError(err):
					// What `uplinkd run` calls a config error, and a file
					// caught while it changed: refused, the config kept.
					refused++
				default:
					unexpected = append(unexpected, err)
				}
				total++
				mu.Unlock()
			}
		}()
	}
	// Until both outcomes have happened often enough (the swap timing
	// decides which file a reload reads).
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		done := accepted >= enough && refused-changing >= enough || len(unexpected) > 0
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after 2 minutes of reloads: %d accepted, %d refused (%d caught the file changing)", accepted, refused, changing)
			break
		}
	}
	close(stopReload)
	// Passes go on meanwhile (the harness's syncs channel must not fill).
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case <-l.syncs:
			case <-swapDone:
				return
			}
		}
	}()
	wg.Wait()
	close(stopSwap)
	<-swapDone
	<-drained
	t.Logf("%d reloads: %d accepted, %d refused (%d of them caught the file changing)", total, accepted, refused, changing)
	if len(unexpected) > 0 {
		t.Fatalf("%d reloads failed other than by a config error, first: %v", len(unexpected), errors.Join(unexpected[0]))
	}
	if accepted+refused != total {
		t.Fatalf("%d of %d reloads returned", accepted+refused, total)
	}
	select {
	case err := <-l.done:
		t.Fatalf("the loop ended during the reloads: %v", err)
	default:
	}
	for _, r := range l.logs.records(map[string]any{"event": "config-reload", "level": "ERROR"}) {
		if r["reason"] == nil {
			t.Fatalf("a refused reload logged without its reason: %v", r)
		}
	}
	// The last good file read counts: with the rule, then without.
	for _, tt := range []struct {
		text     string
		wantRule bool
	}{{withRule, true}, {withoutRule, false}} {
		swap(tt.text)
		if err := l.d.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		// The reload's pass (or one still running from the race) brings
		// the kernel to the config; wait for the pass that shows it.
		for i := 0; l.k.hasRule(100) != tt.wantRule; i++ {
			if i == 20 {
				t.Fatalf("20 passes after the final reload the rule is there: %v, want %v", !tt.wantRule, tt.wantRule)
			}
			l.pass()
		}
	}
}
