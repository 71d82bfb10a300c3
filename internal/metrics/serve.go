package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
)

// Serve answers GET /metrics on addr (host:port) with r's series and the
// process's own until ctx ends. It returns an error at once when addr
// cannot be listened on, and otherwise only after the server and all its
// connections have ended.
func Serve(ctx context.Context, addr string, r *Registry) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return ServeListener(ctx, ln, r)
}

// ServeListener is Serve on a listener the caller opened; it closes ln.
func ServeListener(ctx context.Context, ln net.Listener, r *Registry) error {
	if r == nil {
		ln.Close()
		return errors.New("metrics: no registry")
	}
	// HELP/TYPE lines, so Prometheus knows counters and histograms.
	vm.ExposeMetadata(true)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		r.set.WritePrometheus(w)
		vm.WriteProcessMetrics(w)
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	served := make(chan struct{})
	shut := make(chan struct{})
	go func() {
		defer close(shut)
		select {
		case <-ctx.Done():
		case <-served:
			return
		}
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close() // a scrape that would not end
		}
	}()
	err := srv.Serve(ln)
	close(served)
	<-shut
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("metrics: %w", err)
}
