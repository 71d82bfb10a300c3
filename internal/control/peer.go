package control

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// peer is who is on the other end of a connection, from the kernel
// (SO_PEERCRED), not from anything the client says.
type peer struct {
	pid      int32
	uid, gid uint32
}

func peerCred(c *net.UnixConn) (peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var uc *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		uc, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peer{}, err
	}
	if serr != nil {
		return peer{}, fmt.Errorf("SO_PEERCRED: %w", serr)
	}
	return peer{pid: uc.Pid, uid: uc.Uid, gid: uc.Gid}, nil
}

// allowed decides whether p may use the socket: root, the daemon's own user
// (who owns the socket file anyway), or, with a group configured, a member
// of that group by primary or supplementary group. SO_PEERCRED carries only
// the primary gid, so supplementary groups come from /proc/PID/status; a
// peer that exited before it is read is refused.
func allowed(p peer, group int, self uint32, procRoot string) bool {
	if p.uid == 0 || p.uid == self {
		return true
	}
	if group < 0 {
		return false
	}
	if p.gid == uint32(group) {
		return true
	}
	groups, err := procGroups(procRoot, p.pid)
	if err != nil {
		return false
	}
	for _, g := range groups {
		if g == uint32(group) {
			return true
		}
	}
	return false
}

// procGroups reads the supplementary groups of pid.
func procGroups(procRoot string, pid int32) ([]uint32, error) {
	data, err := os.ReadFile(fmt.Sprintf("%s/%d/status", procRoot, pid))
	if err != nil {
		return nil, err
	}
	return parseGroups(data)
}

// parseGroups takes the "Groups:" line of a /proc/PID/status file.
func parseGroups(status []byte) ([]uint32, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("Groups:"))
		if !ok {
			continue
		}
		var out []uint32
		for _, f := range bytes.Fields(rest) {
			g, err := strconv.ParseUint(string(f), 10, 32)
			if err != nil {
				return nil, fmt.Errorf("groups line: %q: %w", f, err)
			}
			out = append(out, uint32(g))
		}
		return out, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("no Groups line")
}
