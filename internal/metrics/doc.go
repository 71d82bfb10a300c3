// Package metrics is uplinkd's optional Prometheus endpoint ([daemon]
// metrics_listen): per-uplink state, loss, rtt, transitions and reconnects;
// passes, pass duration, repairs and netlink overflows; and the process's
// own figures (RSS, CPU, file descriptors, Go runtime).
//
// It uses github.com/VictoriaMetrics/metrics rather than
// prometheus/client_golang: it writes the same Prometheus text format
// (with HELP/TYPE lines and le-bucket histograms), has two small
// dependencies instead of client_golang's protobuf, and its package init
// does next to nothing, which matters for a daemon that must stay under
// 10 MB of RSS on small routers. The daemon uses fixed series it knows in
// advance, so client_golang's collectors and registries would buy nothing.
//
// Off costs nothing: the daemon holds a nil *Registry when metrics_listen is
// empty, every recorder method on a nil *Registry returns at once, and
// nothing is allocated or started until New and Serve are called.
package metrics
