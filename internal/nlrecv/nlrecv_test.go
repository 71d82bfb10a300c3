package nlrecv

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nlmsg is one netlink message as the kernel writes it, padded to 4 bytes.
func nlmsg(typ uint16, payload []byte) []byte {
	n := unix.NLMSG_HDRLEN + len(payload)
	b := make([]byte, nlmsgAlign(n))
	binary.NativeEndian.PutUint32(b[0:4], uint32(n))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], uint16(netlink.Multi))
	binary.NativeEndian.PutUint32(b[8:12], 7)
	binary.NativeEndian.PutUint32(b[12:16], 42)
	copy(b[unix.NLMSG_HDRLEN:], payload)
	return b
}

func TestSplit(t *testing.T) {
	// An rtmsg with one attribute (RTA_OIF 4), as the kernel sends it.
	route := []byte{unix.AF_INET, 32, 0, 0, 100, 157, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST, 0, 0, 0, 0, 8, 0, unix.RTA_OIF, 0, 4, 0, 0, 0}
	odd := []byte{1, 2, 3, 4, 5} // a payload that needs padding
	tests := []struct {
		name      string
		datagram  []byte
		wantTypes []netlink.HeaderType
		wantData  [][]byte
		wantErr   bool
	}{
		{"one", nlmsg(unix.RTM_NEWROUTE, route), []netlink.HeaderType{unix.RTM_NEWROUTE}, [][]byte{route}, false},
		{"two, the first padded", slices.Concat(nlmsg(unix.RTM_NEWLINK, odd), nlmsg(unix.RTM_DELROUTE, route)),
			[]netlink.HeaderType{unix.RTM_NEWLINK, unix.RTM_DELROUTE}, [][]byte{odd, route}, false},
		{"the last one unpadded", nlmsg(unix.RTM_NEWLINK, odd)[:unix.NLMSG_HDRLEN+len(odd)],
			[]netlink.HeaderType{unix.RTM_NEWLINK}, [][]byte{odd}, false},
		{"empty", nil, nil, nil, false},
		{"a header cut short", nlmsg(unix.RTM_NEWROUTE, route)[:10], nil, nil, true},
		{"a message longer than the datagram", nlmsg(unix.RTM_NEWROUTE, route)[:unix.NLMSG_HDRLEN+4], nil, nil, true},
		{"a length below the header's", func() []byte {
			b := nlmsg(unix.RTM_NEWROUTE, route)
			binary.NativeEndian.PutUint32(b, 8)
			return b
		}(), nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, err := Split(nil, tt.datagram)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != len(tt.wantTypes) {
				t.Fatalf("%d messages, want %d", len(msgs), len(tt.wantTypes))
			}
			for i, m := range msgs {
				if m.Header.Type != tt.wantTypes[i] || !slices.Equal(m.Data, tt.wantData[i]) {
					t.Errorf("message %d: type %d data %x, want type %d data %x", i, m.Header.Type, m.Data, tt.wantTypes[i], tt.wantData[i])
				}
				if m.Header.Sequence != 7 || m.Header.PID != 42 || m.Header.Flags != netlink.Multi || int(m.Header.Length) != unix.NLMSG_HDRLEN+len(tt.wantData[i]) {
					t.Errorf("message %d: header %+v", i, m.Header)
				}
			}
		})
	}
}
