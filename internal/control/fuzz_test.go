package control

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// fuzzHandler records what reaches the daemon's side.
type fuzzHandler struct {
	fakeHandler
	lastEvent *Event
	reconnect string
	drain     *Drain
}

func (h *fuzzHandler) Drain(_ context.Context, d Drain) error {
	h.drain = &d
	return nil
}

func (h *fuzzHandler) Event(_ context.Context, ev Event) error {
	h.lastEvent = &ev
	return nil
}

func (h *fuzzHandler) Reconnect(_ context.Context, uplink string) error {
	h.reconnect = uplink
	return nil
}

// FuzzControlRequest feeds arbitrary bytes to the server's request path
// (readRequest, then dispatch, as handle does): it must never panic, always
// produce an answer that encodes as one JSON line, and hand the Handler only
// requests that validate (events that pass Event.Validate, a named uplink).
// Run it with `make fuzz` or
// go test -run '^$' -fuzz FuzzControlRequest -fuzztime 10s ./internal/control
// The seed corpus is below and in testdata/fuzz/FuzzControlRequest.
func FuzzControlRequest(f *testing.F) {
	for _, seed := range []string{
		`{"v":1,"cmd":"status"}` + "\n",
		`{"v":1,"cmd":"reload"}`,
		`{"v":1,"cmd":"reconnect","uplink":"ppp0"}`,
		`{"v":1,"cmd":"reconnect"}`,
		`{"v":1,"cmd":"drain","uplink":"ppp0","force":true}`,
		`{"v":1,"cmd":"undrain","uplink":"ppp0"}`,
		`{"v":1,"cmd":"drain"}`,
		`{"v":1,"cmd":"event","event":{"iface":"ppp0","state":"up","local":"203.0.113.9","remote":"198.51.100.1"}}`,
		`{"v":1,"cmd":"event","event":{"role":"master"}}`,
		`{"v":1,"cmd":"event","event":{"role":"master","iface":"eth0"}}`,
		`{"v":1,"cmd":"event","event":{"iface":"averyveryverylongname","state":"up"}}`,
		`{"v":1,"cmd":"event","event":{"iface":"eth0","state":"up","local":"::1%eth0"}}`,
		`{"v":1,"cmd":"event"}`,
		`{"v":2,"cmd":"status"}`,
		`{"v":"one","cmd":7}`,
		`{"v":1,"cmd":"status"}{"v":1,"cmd":"reload"}`,
		`{"v":1,"cmd":"status","v":1,"cmd":"reload"}`,
		`{"V":1,"CMD":"STATUS"}`,
		`[]`, `null`, `"status"`, ``, "\x00\xff", `{"v":1e400}`,
		"GET / HTTP/1.0\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h := &fuzzHandler{}
		s := &server{h: h}
		s.opts.defaults()
		// A small limit, so that the fuzzer reaches the size check too.
		req, err := readRequest(bytes.NewReader(data), 256)
		var resp Response
		if err != nil {
			if len(data) <= 256 && strings.HasPrefix(err.Error(), "request larger") {
				t.Fatalf("%d bytes reported as too large", len(data))
			}
			resp = Response{V: Version, Error: err.Error()}
		} else {
			resp = s.dispatch(context.Background(), &req, Caller{UID: 0, PID: 1})
		}
		var buf bytes.Buffer
		if err := writeResponse(&buf, resp); err != nil {
			t.Fatalf("answer does not encode: %v", err)
		}
		if bytes.Count(buf.Bytes(), []byte("\n")) != 1 || !json.Valid(bytes.TrimSpace(buf.Bytes())) {
			t.Fatalf("answer is not one JSON line: %q", buf.Bytes())
		}
		if resp.OK != (resp.Error == "") {
			t.Fatalf("ok %v with error %q", resp.OK, resp.Error)
		}
		if h.lastEvent != nil {
			if err := h.lastEvent.Validate(); err != nil {
				t.Fatalf("the handler got an invalid event %+v: %v", *h.lastEvent, err)
			}
			if req.Cmd != CmdEvent {
				t.Fatalf("event handler called for %q", req.Cmd)
			}
		}
		if h.reconnect == "" && req.Cmd == CmdReconnect && resp.OK {
			t.Fatalf("reconnect answered ok without a name")
		}
		if h.drain != nil && (h.drain.Uplink == "" || (req.Cmd != CmdDrain && req.Cmd != CmdUndrain) ||
			h.drain.Undrain != (req.Cmd == CmdUndrain) || h.drain.Force != req.Force) {
			t.Fatalf("drain handler got %+v for %+v", *h.drain, req)
		}
		if resp.OK && req.V != Version {
			t.Fatalf("version %d accepted", req.V)
		}
	})
}
