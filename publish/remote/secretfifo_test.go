package remote

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/publish"
)

// TestPublisherSecretFIFO: a publisher whose password_file or key_file is a
// FIFO is refused at once when it is built, which is what `uplinkd check`,
// `run` and every reload do (daemon.CheckConfig), and a file swapped for a
// FIFO after that fails the publish at once.
func TestPublisherSecretFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := newDynServer(t, nil)
	specs := map[string]publish.Spec{
		"dyndns2 password_file": func() publish.Spec { s := dynSpec(t, srv, t.TempDir(), ""); s.PasswordFile = fifo; return s }(),
		"dyndns2 ca_file":       func() publish.Spec { s := dynSpec(t, srv, t.TempDir(), ""); s.CAFile = fifo; return s }(),
		"rfc2136 key_file": {Uplink: "dsl", Name: "dns", Kind: publish.KindRFC2136, Server: "127.0.0.1:53", Zone: "example.net.",
			Hostname: "gw.example.net.", KeyFile: fifo, TTL: time.Minute, Timeout: time.Second},
	}
	for name, spec := range specs {
		t.Run(name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := publish.NewManager([]publish.Spec{spec}, publish.Options{Log: quiet()})
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "not a regular file") {
					t.Fatalf("error %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("building the publisher blocks on a FIFO")
			}
		})
	}
	t.Run("swapped for a FIFO after load", func(t *testing.T) {
		spec := dynSpec(t, srv, t.TempDir(), "")
		p, err := New(spec, publish.PublisherOptions{Log: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(spec.PasswordFile)
		if err := syscall.Mkfifo(spec.PasswordFile, 0o600); err != nil {
			t.Fatal(err)
		}
		done := make(chan publish.Result, 1)
		go func() { done <- p.Publish(t.Context(), publish.Request{Addr: addrA}) }()
		select {
		case res := <-done:
			if res.Outcome != publish.Permanent || len(srv.got()) != 0 {
				t.Fatalf("got %v %v, %d requests", res.Outcome, res.Err, len(srv.got()))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("publishing blocks on a FIFO")
		}
	})
}
