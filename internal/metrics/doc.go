// Package metrics is uplinkd's optional Prometheus endpoint ([daemon]
// metrics_listen): per-uplink state, loss, rtt, jitter (of the last probe
// round), transitions and reconnects; passes, pass duration, repairs and
// netlink overflows; the two-gateway HA role (SetHARole); publish attempts
// (PublishResult); the [[service]] backends' health, the publishers' last
// results and the DHCP server's leases, read from their owners at each
// scrape (SetSources); and the process's own figures (RSS, CPU, I/O, Go
// runtime). docs/metrics.md lists every series.
//
// Everything here is written by hand, the HTTP server included, to keep
// net/http, crypto/tls and crypto/x509 (about 1 MB of binary) out of the
// daemon. Issue 22's target is an idle RSS under 10 MB, and the file pages
// of the binary are most of that RSS: the kernel maps nearly all of it, so
// its size decides (docs/performance.md, "Idle RSS: what the 10 MB target
// would cost"). The package used github.com/VictoriaMetrics/metrics (chosen
// over prometheus/client_golang, which cost 2.7 MB of binary), but that
// imports net/http, and so did its server, for one plain GET. The series
// are few and fixed, so a counter, a gauge, a histogram and a set of them
// (series.go) and a one-request-per-connection HTTP/1.x server (serve.go)
// are a few hundred lines. They write the same text VictoriaMetrics
// v1.45.0 wrote, series for series, so dashboards and alerts need no
// change.
//
// Off costs nothing: the daemon holds a nil *Registry when metrics_listen is
// empty, every recorder method on a nil *Registry returns at once, and
// nothing is allocated or started until New and Serve are called.
package metrics
