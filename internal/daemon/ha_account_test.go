package daemon

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/uplinkd/uplinkd/internal/lab"
)

// account is the lab's one PPPoE account shared by both gateways: a dial
// while the other gateway holds the session is refused ("busy"), as an ISP
// refuses a second session. The uplinks' reconnect and stop commands reach
// it through a shell script and nc over a Unix socket; a dial creates the
// router's dsl0 link (lab.Dial), a hang-up deletes it (lab.DropLink).
type account struct {
	labs   []*lab.Lab              // the routers, A first
	role   func(router int) string // the router's daemon's role
	script string

	mu      sync.Mutex
	owner   int // -1: free
	dials   []accountDial
	refused int
}

type accountDial struct {
	router int
	role   string // the router's daemon's role when it dialled
}

func newAccount(t testing.TB, labs []*lab.Lab, role func(int) string) *account {
	dir := t.TempDir()
	sock := filepath.Join(dir, "account.sock")
	script := filepath.Join(dir, "account")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n# account dial|hangup A|B\nreply=$(printf '%s %s\\n' \"$1\" \"$2\" | nc -N -U "+sock+")\n[ \"$reply\" = ok ]\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	a := &account{labs: labs, role: role, script: script, owner: -1}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go a.serve(c)
		}
	}()
	return a
}

func (a *account) serve(c net.Conn) {
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	f := strings.Fields(line)
	if len(f) != 2 || len(f[1]) != 1 || f[1][0] < 'A' || int(f[1][0]-'A') >= len(a.labs) {
		fmt.Fprintln(c, "bad request")
		return
	}
	i := int(f[1][0] - 'A')
	fmt.Fprintln(c, a.do(f[0], i))
}

func (a *account) do(op string, i int) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.labs[i]
	up := l.UplinkAddr("dsl0").IsValid()
	switch op {
	case "dial":
		if a.owner >= 0 && a.owner != i {
			a.refused++
			return "busy"
		}
		a.owner = i
		a.dials = append(a.dials, accountDial{router: i, role: a.role(i)})
		if !up {
			if _, err := l.Dial("dsl0"); err != nil {
				return err.Error()
			}
		}
		return "ok"
	case "hangup":
		if up {
			if _, err := l.DropLink("dsl0"); err != nil {
				return err.Error()
			}
		}
		if a.owner == i {
			a.owner = -1
		}
		return "ok"
	}
	return "bad request"
}

// session is the router that holds the session now, or -1.
func (a *account) session() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, l := range a.labs {
		if l.UplinkAddr("dsl0").IsValid() {
			return i
		}
	}
	return -1
}
