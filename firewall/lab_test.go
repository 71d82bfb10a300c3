package firewall

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"

	labguard "github.com/uplinkd/uplinkd/internal/lab"
	"github.com/uplinkd/uplinkd/internal/netnsx"
)

// Every kernel-touching test works in network namespaces of its own, named
// fw-<pid>-<n>, and deletes them on every exit path (t.Cleanup runs after
// failures and panics). Nothing here touches the host's namespace.

const nsPrefix = "fw-"

var nsCounter atomic.Int64

// TestMain also guards the host: GuardMain fails the run if the host
// namespace's rules, routes, links or netfilter state changed, and its sweep
// (shared by every package's test namespaces) removes fw- namespaces of dead
// runs before and reports any this run left behind.
func TestMain(m *testing.M) { os.Exit(labguard.GuardMain(m)) }

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
}

type netNS struct {
	name string
	fd   int
}

// newNS creates a fresh namespace with lo up.
func newNS(t testing.TB) *netNS {
	t.Helper()
	needRoot(t)
	name := fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), nsCounter.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { f.Close() }) // runs before the delete above
	ns := &netNS{name: name, fd: int(f.Fd())}
	ns.mustRun(t, "ip", "link", "set", "lo", "up")
	return ns
}

// run executes a command inside the namespace.
func (n *netNS) run(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...).CombinedOutput()
	return string(out), err
}

func (n *netNS) mustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.run(args...)
	if err != nil {
		t.Fatalf("%s: %s: %v\n%s", n.name, strings.Join(args, " "), err, out)
	}
	return out
}

// runStdin executes a command inside the namespace with stdin.
func (n *netNS) runStdin(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %s: %v\n%s", n.name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// do runs f on a thread inside the namespace (sockets f creates live there).
func (n *netNS) do(t testing.TB, f func()) {
	t.Helper()
	if err := netnsx.Do(netns.NsHandle(n.fd), func() error { f(); return nil }); err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
}

// veth connects a in namespace na with b in namespace nb.
func veth(t testing.TB, na *netNS, a string, nb *netNS, b string) {
	t.Helper()
	na.mustRun(t, "ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", nb.name)
	na.mustRun(t, "ip", "link", "set", a, "up")
	nb.mustRun(t, "ip", "link", "set", b, "up")
}

// backendKind is one backend under test.
type backendKind struct {
	name string
	make func(t testing.TB, ns *netNS) Backend
	// iptables is the admin's iptables command of the same flavour.
	iptables string
}

var backendKinds = []backendKind{
	{name: "nftables", iptables: "iptables", make: func(t testing.TB, ns *netNS) Backend {
		b, err := NewNFTables(ns.fd, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}},
	{name: "iptables-legacy", iptables: "iptables-legacy", make: func(t testing.TB, ns *netNS) Backend {
		b, err := NewIPTables(ns.fd, nil, true)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}},
	{name: "iptables-nft", iptables: "iptables", make: func(t testing.TB, ns *netNS) Backend {
		b, err := NewIPTables(ns.fd, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}},
}
