package hooks

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// procTable finds a live pppd for a peer. proc is the procfs to scan and run
// the directory of pppd's pid files; tests point both at fake trees.
type procTable struct{ proc, run string }

// pppd returns the pid of a live pppd for peer or iface: the pid in pppd's
// pid file for the interface (/run/IFACE.pid, written once the link exists)
// or for a `linkname` equal to the peer (/run/ppp-PEER.pid), or a process
// whose command line is `pppd ... call PEER` (Debian's pon runs exactly
// that; this also finds a dial whose interface does not exist yet).
func (p procTable) pppd(peer, iface string) (int, bool) {
	var files []string
	if iface != "" {
		files = append(files, iface+".pid")
	}
	if peer != "" {
		files = append(files, "ppp-"+peer+".pid")
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(p.run, f))
		if err != nil {
			continue
		}
		first, _, _ := strings.Cut(string(b), "\n")
		if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && pid > 0 {
			if argv := p.cmdline(pid); len(argv) > 0 && isPPPD(argv[0]) {
				return pid, true
			}
		}
	}
	if peer == "" {
		return 0, false
	}
	entries, err := os.ReadDir(p.proc)
	if err != nil {
		return 0, false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		argv := p.cmdline(pid)
		if len(argv) == 0 || !isPPPD(argv[0]) {
			continue
		}
		for i := 1; i+1 < len(argv); i++ {
			if argv[i] == "call" && argv[i+1] == peer {
				return pid, true
			}
		}
	}
	return 0, false
}

// cmdline is the argv of a process; nil when it is gone or a zombie (a
// zombie's cmdline is empty), so a dead pppd never counts as alive.
func (p procTable) cmdline(pid int) []string {
	b, err := os.ReadFile(filepath.Join(p.proc, strconv.Itoa(pid), "cmdline"))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
}

func isPPPD(argv0 string) bool { return filepath.Base(argv0) == "pppd" }

// isPPPD reports whether pid is a live pppd (not gone, not a zombie, not
// a reused pid now running something else).
func (p procTable) isPPPD(pid int) bool {
	argv := p.cmdline(pid)
	return len(argv) > 0 && isPPPD(argv[0])
}
