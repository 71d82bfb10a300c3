package firewall

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/netnsx"
	"github.com/uplinkd/uplinkd/internal/nlrecv"
)

// nftBackend owns table ip uplinkd.
type nftBackend struct {
	mu      sync.Mutex
	log     *slog.Logger
	netnsFd int
	conn    *nftables.Conn // lasting: a new nfnetlink socket per batch costs 12-40 ms
	nf      *nfConn

	// last is the Ruleset of the last successful Sync and cur its program;
	// nil when the kernel state is unknown or damaged (the next Sync then
	// replaces the table). sig is cur's signature, computed by the first
	// Check after a Sync.
	last *Ruleset
	cur  *nftProgram
	sig  *nftSignature
	// carry keeps the dual-stack traffic counts monotonic (traffic.go).
	carry6 dualCarry
	// verifiedGen is a ruleset generation at which the table was verified
	// equal to sig; while the generation stays there, Check is one request.
	verifiedGen uint32
	genValid    bool
	closed      bool
}

var nftTable = &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}

// NewNFTables returns the nftables backend working in the network namespace
// netnsFd refers to (netnsx.IsOwn, <= 0: the current one). It keeps two netlink
// sockets open for its lifetime: the nftables connection for batches and a raw
// one for generation checks and conntrack.
func NewNFTables(netnsFd int, log *slog.Logger) (Backend, error) {
	b := &nftBackend{log: orDiscard(log), netnsFd: netnsFd}
	if err := b.dial(); err != nil {
		return nil, err
	}
	nf, err := dialNF(netnsFd)
	if err != nil {
		b.conn.CloseLasting()
		return nil, fmt.Errorf("nftables backend: %w", err)
	}
	b.nf = nf
	return b, nil
}

// bigBuffers lets one batch carry thousands of set elements and rules: a
// netlink message larger than the socket's send buffer fails with EMSGSIZE,
// and the per-message acks must fit the receive buffer. The FORCE variants
// pass wmem_max/rmem_max (we have CAP_NET_ADMIN); the plain ones are the
// fallback.
func bigBuffers(c *netlink.Conn) error {
	const size = 8 << 20
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], size); e != nil {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], size); e != nil {
					serr = e
				}
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

func (b *nftBackend) dial() error {
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(bigBuffers)}
	if !netnsx.IsOwn(b.netnsFd) {
		opts = append(opts, nftables.WithNetNSFd(b.netnsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nftables backend: open netlink: %w", err)
	}
	b.conn = c
	return nil
}

// redial replaces the lasting connection after a failed batch: google/nftables
// keeps a serialization error and a half-built batch on the Conn, and a
// receive error can leave unread acks behind.
func (b *nftBackend) redial() {
	b.conn.CloseLasting()
	if err := b.dial(); err != nil {
		b.log.Warn("nftables reconnect failed", "reason", err.Error())
	}
}

func (b *nftBackend) Plan(rs Ruleset) string { return buildRules(rs).text() + npt6Text(rs) }

// Sync compares rs with the last Ruleset it applied (rs must not be modified
// afterwards), then sends only the chains and set contents that differ, or
// the whole table the first time and after damage.
func (b *nftBackend) Sync(rs Ruleset) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false, errClosed
	}
	if b.last != nil && rulesetEqual(*b.last, rs) {
		return false, nil
	}
	start := time.Now()
	old := b.last
	if old != nil && rulesetEqual(withoutNPT6(*old), withoutNPT6(rs)) {
		// Only the IPv6 state changed: table ip uplinkd stays.
		cur := b.cur
		b.forget()
		if err := b.syncNPT6(old, rs); err != nil {
			return false, err
		}
		b.last, b.cur = &rs, cur
		return true, nil
	}
	prog := buildRules(rs)
	cur := b.cur
	b.forget()
	full := cur == nil
	if !full {
		ok, err := prog.queueDiff(b.conn, cur)
		if err != nil {
			b.redial()
			return false, fmt.Errorf("nftables sync: build changes to table ip %s: %w", TableName, err)
		}
		full = !ok // nothing was queued
	}
	if !full {
		err := b.conn.Flush()
		if err == nil {
			if err := b.syncNPT6(old, rs); err != nil {
				return false, err
			}
			b.last, b.cur = &rs, prog
			b.log.Debug("nftables sync", "event", "apply", "full", false, "duration", time.Since(start))
			return true, nil
		}
		// The table is not what we thought (someone changed it since the
		// last Check): the transaction was rolled back as a whole; replace
		// the table instead.
		b.log.Info("nftables incremental sync failed, replacing the table", "reason", err.Error())
		b.redial()
	}
	if err := prog.queue(b.conn); err != nil {
		b.redial()
		return false, fmt.Errorf("nftables sync: build table ip %s: %w", TableName, err)
	}
	if err := b.conn.Flush(); err != nil {
		b.redial()
		return false, fmt.Errorf("nftables sync: commit table ip %s: %w", TableName, err)
	}
	if err := b.syncNPT6(old, rs); err != nil {
		return false, err
	}
	b.last, b.cur = &rs, prog
	b.log.Debug("nftables sync", "event", "apply", "full", true, "chains", len(prog.chains), "sets", len(prog.sets),
		"duration", time.Since(start))
	return true, nil
}

// InSync reports whether rs is what the last Sync applied, with no damage
// seen since: Sync(rs) would do nothing.
func (b *nftBackend) InSync(rs Ruleset) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.closed && b.last != nil && rulesetEqual(*b.last, rs)
}

func (b *nftBackend) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	b.forget()
	// Adding the table first makes the delete valid when it is already gone.
	b.conn.AddTable(nftTable)
	b.conn.DelTable(nftTable)
	if err := b.conn.Flush(); err != nil {
		b.redial()
		return fmt.Errorf("nftables flush: delete table ip %s: %w", TableName, err)
	}
	return b.syncNPT6(nil, Ruleset{})
}

// withoutNPT6 is rs without its IPv6 state: what table ip uplinkd
// renders.
func withoutNPT6(rs Ruleset) Ruleset {
	rs.NPT6, rs.Filters6, rs.Marks6 = nil, nil, nil
	rs.IPv6, rs.Deny.DropAddrs6, rs.Deny.RejectAddrs6 = false, nil, nil
	return rs
}

// has6 reports whether rs has IPv6 state (table ip6 uplinkd6).
func has6(rs Ruleset) bool {
	return len(rs.NPT6)+len(rs.Filters6)+len(rs.Marks6) > 0 || input6Wanted(rs) || forward6Wanted(rs)
}

// view6 is the part of a Ruleset that table ip6 uplinkd6 renders
// (ip6Chains): two Rulesets with equal views give the same table.
type view6 struct {
	npt                  []NPT6
	filters              []Filter6
	marks                []Mark6
	on                   bool
	input, forward       Policy
	lan                  string
	drop, reject         []netip.Prefix
	dropMACs, rejectMACs []net.HardwareAddr
}

func viewOf6(rs Ruleset) view6 {
	return view6{rs.NPT6, rs.Filters6, rs.Marks6, rs.IPv6, rs.InputPolicy, rs.ForwardPolicy, rs.LANInterface,
		rs.Deny.DropAddrs6, rs.Deny.RejectAddrs6, rs.Deny.DropMACs, rs.Deny.RejectMACs}
}

// syncNPT6 replaces table ip6 uplinkd6 by rs's IPv6 state when it differs
// from what old (the last Sync's Ruleset; nil: unknown) put there. With
// no IPv6 state and an unknown kernel, the table is deleted only when it
// exists (an earlier run left it): an IPv4-only box gets no IPv6 request
// beyond that one read.
func (b *nftBackend) syncNPT6(old *Ruleset, rs Ruleset) error {
	if old != nil && reflect.DeepEqual(viewOf6(*old), viewOf6(rs)) {
		return nil
	}
	if !has6(rs) && (old == nil || !has6(*old)) {
		tables, err := b.conn.ListTablesOfFamily(nftables.TableFamilyIPv6)
		if err != nil {
			// A kernel without the ip6 family holds nothing of ours,
			// and an IPv4-only sync must not fail over IPv6.
			b.log.Debug("nftables: cannot list ip6 tables; assuming none of ours", "reason", err.Error())
			b.redial()
			return nil
		}
		if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == Table6Name }) {
			return nil
		}
	}
	if err := queueNPT6(b.conn, rs); err != nil {
		b.redial()
		return fmt.Errorf("nftables sync: build table ip6 %s: %w", Table6Name, err)
	}
	if err := b.conn.Flush(); err != nil {
		b.redial()
		return fmt.Errorf("nftables sync: commit table ip6 %s: %w", Table6Name, err)
	}
	return nil
}

func (b *nftBackend) Check() (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false, errClosed
	}
	if b.cur == nil {
		return false, nil
	}
	gen, err := b.nf.nftGeneration()
	if err != nil {
		return false, fmt.Errorf("nftables check: %w", err)
	}
	if b.genValid && gen == b.verifiedGen {
		return true, nil
	}
	ok, why, err := b.verify()
	if err == nil && ok && b.last != nil && has6(*b.last) {
		ok, why, err = b.nf.verifyNPT6(*b.last)
	}
	if err != nil {
		return false, fmt.Errorf("nftables check: %w", err)
	}
	if !ok {
		b.log.Info("nftables table damaged", "table", TableName, "reason", why)
		b.forget()
		return false, nil
	}
	// Only trust the generation if nothing committed during verification.
	if gen2, err := b.nf.nftGeneration(); err == nil && gen2 == gen {
		b.verifiedGen, b.genValid = gen, true
	}
	return true, nil
}

// forget drops what we believe the kernel holds.
func (b *nftBackend) forget() {
	b.last, b.cur, b.sig, b.genValid = nil, nil, nil, false
}

// rulesetEqual compares what is rendered.
func rulesetEqual(a, b Ruleset) bool {
	return reflect.DeepEqual(a, b)
}

// verify compares the kernel's table with the signature of the last Sync.
func (b *nftBackend) verify() (bool, string, error) {
	if b.sig == nil {
		sig := b.cur.signature()
		b.sig = &sig
	}
	chains, err := b.conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, "", fmt.Errorf("list chains: %w", err)
	}
	seen := 0
	for _, c := range chains {
		if c.Table == nil || c.Table.Name != TableName {
			continue
		}
		want, ok := b.sig.chains[c.Name]
		if !ok {
			return false, "unexpected chain " + c.Name, nil
		}
		seen++
		if want.base != (c.Hooknum != nil) {
			return false, "chain " + c.Name + " changed kind", nil
		}
		if want.base && (uint32(*c.Hooknum) != want.hook || c.Policy == nil || uint32(*c.Policy) != want.policy) {
			return false, "chain " + c.Name + " changed hook or policy", nil
		}
	}
	if seen != len(b.sig.chains) {
		return false, "chains missing", nil
	}
	rules, err := b.nf.nftRuleComments(unix.NFPROTO_IPV4, TableName)
	if err != nil {
		return false, "", err
	}
	for name, want := range b.sig.chains {
		if !equalStrings(rules[name], want.comments) {
			return false, "rules of chain " + name + " changed", nil
		}
	}
	if len(b.sig.sets) > 0 {
		sets, err := b.conn.GetSets(nftTable)
		if err != nil {
			return false, "", fmt.Errorf("list sets: %w", err)
		}
		found := 0
		for _, s := range sets {
			if strings.HasPrefix(s.Name, "__") {
				continue // anonymous sets belong to their rules
			}
			n, ok := b.sig.sets[s.Name]
			if !ok {
				return false, "unexpected set " + s.Name, nil
			}
			found++
			if n < 0 {
				continue
			}
			elems, err := b.conn.GetSetElements(s)
			if err != nil {
				return false, "", fmt.Errorf("list set %s: %w", s.Name, err)
			}
			if len(elems) != n {
				return false, fmt.Sprintf("set %s has %d elements, want %d", s.Name, len(elems), n), nil
			}
		}
		if found != len(b.sig.sets) {
			return false, "sets missing", nil
		}
	}
	return true, "", nil
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ClearConntrackByMark is DeleteConntrackByMark in one request, without
// the count.
func (b *nftBackend) ClearConntrackByMark(mark, mask uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	return b.nf.clearConntrackByMark(mark, mask)
}

// ClearConntrack6ByMark deletes the IPv6 conntrack entries with the mark.
func (b *nftBackend) ClearConntrack6ByMark(mark, mask uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	return b.nf.clearConntrackByMarkFamily(mark, mask, unix.AF_INET6)
}

func (b *nftBackend) DeleteConntrackByMark(mark, mask uint32) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errClosed
	}
	return b.nf.deleteConntrackByMark(mark, mask)
}

func (b *nftBackend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	return errors.Join(b.conn.CloseLasting(), b.nf.Close())
}

// WatchNFTables subscribes to nftables events in the namespace netnsFd refers
// to (netnsx.IsOwn, <= 0: the current one) and sends on out, without blocking, whenever a
// transaction by another process touched table ip uplinkd: its table, chains,
// rules or sets, including its deletion by `nft flush ruleset`. The caller
// then runs Check and Sync, which restores the table within milliseconds. Our
// own transactions are recognized by the originating thread's id in the
// generation message and are not reported. When events were lost (socket
// overrun) it reports too, since anything may have happened. It returns when
// ctx is done, or with an error if the subscription cannot be set up at all.
// Give out a buffer of 1: a pending signal already covers later ones.
func WatchNFTables(ctx context.Context, netnsFd int, out chan<- struct{}) error {
	signal := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	first := true
	for {
		err := watchOnce(ctx, netnsFd, signal)
		if ctx.Err() != nil {
			return nil
		}
		if first && err != nil {
			return fmt.Errorf("watch nftables: %w", err)
		}
		first = false
		// The subscription broke (events lost): state is unknown.
		signal()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// watchOnce reads nftables notifications until ctx is done or the
// subscription breaks. It reads the raw messages and looks only at what it
// needs: the family and table name of each object (attribute 1 of every
// table, chain, rule, set and set element message) and, in the NEWGEN
// message that ends a transaction, the committing thread. Decoding whole
// rules (what google/nftables' monitor does) cost enough CPU on every one
// of uplinkd's own address-change transactions to delay the rest of the
// pass on a busy machine.
func watchOnce(ctx context.Context, netnsFd int, signal func()) error {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netnsx.FD(netnsFd)})
	if err != nil {
		return err
	}
	// Read without an allocation per datagram (internal/nlrecv), into
	// 64 KiB: an object's notification is as large as the object.
	recv, err := nlrecv.New(conn, 64<<10)
	if err != nil {
		conn.Close()
		return err
	}
	if err := conn.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		conn.Close()
		return fmt.Errorf("subscribe: %w", err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-ctx.Done():
		case <-stop:
		}
		conn.Close() // ends a waiting Receive
	}()
	touched := false // an object of our table changed in this transaction
	for {
		msgs, err := recv.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("monitor: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type>>8 != unix.NFNL_SUBSYS_NFTABLES || len(m.Data) < 4 {
				continue
			}
			switch typ := int(m.Header.Type & 0xff); typ {
			case unix.NFT_MSG_NEWGEN:
				if touched && !ownTransaction(genPID(m.Data[4:])) {
					signal()
				}
				touched = false
			case unix.NFT_MSG_NEWTABLE, unix.NFT_MSG_DELTABLE, unix.NFT_MSG_NEWCHAIN, unix.NFT_MSG_DELCHAIN,
				unix.NFT_MSG_NEWRULE, unix.NFT_MSG_DELRULE, unix.NFT_MSG_NEWSET, unix.NFT_MSG_DELSET,
				unix.NFT_MSG_NEWSETELEM, unix.NFT_MSG_DELSETELEM:
				if m.Data[0] == unix.NFPROTO_IPV4 && objectTable(m.Data[4:]) == TableName {
					touched = true
				}
			}
		}
	}
}

// objectTable is the table an nftables object message names (attribute 1:
// NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE,
// NFTA_SET_ELEM_LIST_TABLE), "" when absent.
func objectTable(attrs []byte) string {
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == 1 {
			return ad.String()
		}
	}
	return ""
}

// genPID is NFTA_GEN_PROC_PID of a NEWGEN message: the id of the thread
// that committed, 0 when absent.
func genPID(attrs []byte) uint32 {
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return 0
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		if ad.Type() == unix.NFTA_GEN_PROC_PID {
			return ad.Uint32()
		}
	}
	return 0
}

// ownTransaction: the committing thread's id is one of this process's
// threads (for a Go program, any of them may commit).
func ownTransaction(pid uint32) bool {
	if pid == 0 {
		return false
	}
	_, err := os.Stat("/proc/self/task/" + strconv.FormatUint(uint64(pid), 10))
	return err == nil
}
