package rtattr

import (
	"encoding/binary"
	"fmt"
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
			err := Walk(tt.b, func(ad *Decoder) { got = append(got, ad.Type()) })
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

// decoder is what both decoders offer a caller.
type decoder interface {
	Next() bool
	Type() uint16
	Bytes() []byte
	String() string
	Uint32() uint32
	Err() error
}

// walkWith records what a caller of d sees.
func walkWith(d decoder, err error) (seen []string, _ error) {
	if err != nil {
		return nil, err
	}
	for d.Next() {
		seen = append(seen, fmt.Sprintf("%d %x %q", d.Type(), d.Bytes(), d.String()))
		if len(d.Bytes()) == 4 {
			seen = append(seen, fmt.Sprint(d.Uint32()))
		}
	}
	return seen, d.Err()
}

// FuzzDecoderMatchesLibrary: on any bytes, Decoder yields what
// mdlayher/netlink's AttributeDecoder yields (types, payloads, strings,
// uint32s) and fails where it fails.
func FuzzDecoderMatchesLibrary(f *testing.F) {
	f.Add([]byte{})
	f.Add(append(attr(3, []byte("ppp0\x00")), attr(4, []byte{0xdc, 0x05, 0, 0})...))
	f.Add([]byte{0, 0, 1, 0, 8, 0, 2, 0, 1, 2, 3, 4}) // a zero-length attribute first
	f.Add([]byte{8, 0, 0x83, 0x80, 1, 2, 3, 4})       // nested and byte-order flags
	f.Add([]byte{6, 0, 1, 0, 'a', 0})                 // no padding at the end
	f.Add([]byte{2, 0, 1, 0})                         // length below the header
	f.Add([]byte{12, 0, 1, 0, 1, 2})                  // length beyond the buffer
	f.Fuzz(func(t *testing.T, b []byte) {
		lib, libErr := netlink.NewAttributeDecoder(b)
		want, wantErr := walkWith(lib, libErr)
		ours, oursErr := NewDecoder(b)
		got, err := walkWith(ours, oursErr)
		if (err != nil) != (wantErr != nil) || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%x:\n ours    %q, %v\n library %q, %v", b, got, err, want, wantErr)
		}
	})
}

func TestDecoderIntsAndNested(t *testing.T) {
	inner := append(attr(1, []byte{7}), attr(2, []byte{1, 0, 0, 0, 0, 0, 0, 0})...)
	b := append(attr(10|0x8000, inner), attr(11, []byte{5, 0})...)
	var u8 uint8
	var u64 uint64
	var u16 uint16
	err := Walk(b, func(d *Decoder) {
		switch d.Type() {
		case 10:
			d.Nested(func(nd *Decoder) error {
				for nd.Next() {
					switch nd.Type() {
					case 1:
						u8 = nd.Uint8()
					case 2:
						u64 = nd.Uint64()
					}
				}
				return nil
			})
		case 11:
			u16 = d.Uint16()
		}
	})
	if err != nil || u8 != 7 || u64 != 1 || u16 != 5 {
		t.Errorf("u8 %d, u64 %d, u16 %d, err %v; want 7, 1, 5, nil", u8, u64, u16, err)
	}
	if err := Walk(attr(1, []byte{1, 2}), func(d *Decoder) { d.Uint32() }); err == nil {
		t.Error("a two-byte payload read as uint32: no error")
	}
	if err := Walk(attr(1, []byte{3, 0, 1, 0}), func(d *Decoder) {
		d.Nested(func(nd *Decoder) error {
			for nd.Next() {
			}
			return nil
		})
	}); err == nil {
		t.Error("nested attribute with a short header: no error")
	}
}
