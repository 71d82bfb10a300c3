// Package metrics is uplinkd's optional Prometheus endpoint ([daemon]
// metrics_listen): per-uplink state, loss, rtt, jitter (of the last probe
// round), transitions and reconnects; passes, pass duration, repairs and
// netlink overflows; the two-gateway HA role (SetHARole); publish attempts
// (PublishResult); the [[service]] backends' health, the publishers' last
// results and the DHCP server's leases, read from their owners at each
// scrape (SetSources); and the process's own figures (RSS, CPU, file
// descriptors, Go runtime). docs/metrics.md lists every series.
//
// It uses github.com/VictoriaMetrics/metrics rather than
// prometheus/client_golang: it writes the same Prometheus text format
// (with HELP/TYPE lines and le-bucket histograms) with two small
// dependencies instead of client_golang's protobuf and friends, and the
// daemon's idle RSS must stay within 10 MB on small routers. Measured on
// the stripped uplinkd binary (docs/performance.md): VictoriaMetrics adds
// 0.6 MB to the binary and ~0.35 MB of idle RSS with metrics off;
// client_golang adds 2.7 MB and ~2.4 MB. The daemon's series are fixed and
// known in advance, so client_golang's collectors would buy nothing.
//
// Off costs nothing: the daemon holds a nil *Registry when metrics_listen is
// empty, every recorder method on a nil *Registry returns at once, and
// nothing is allocated or started until New and Serve are called.
package metrics
