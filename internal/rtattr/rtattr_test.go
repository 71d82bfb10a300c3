package rtattr

import (
	"encoding/binary"
	"testing"

	"github.com/mdlayher/netlink"
)

func attr(typ uint16, val []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(val)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestWalk(t *testing.T) {
	two := append(attr(3, []byte("ppp0\x00")), attr(4, []byte{0xdc, 0x05, 0, 0})...)
	tests := []struct {
		name    string
		b       []byte
		want    []uint16
		wantErr bool
	}{
		{"empty: no attributes, no error", nil, nil, false},
		{"two attributes in order", two, []uint16{3, 4}, false},
		{"truncated header", []byte{8, 0}, nil, true},
		{"length beyond the buffer", attr(3, []byte("abcd"))[:6], nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []uint16
			err := Walk(tt.b, func(ad *netlink.AttributeDecoder) { got = append(got, ad.Type()) })
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("types = %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("types = %v, want %v", got, tt.want)
				}
			}
		})
	}
}
