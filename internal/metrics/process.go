package metrics

import (
	"bytes"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path"
	"runtime"
	rtmetrics "runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The go_* and process_* series VictoriaMetrics' WriteProcessMetrics wrote
// (v1.45.0, Linux), with the same names, types, order and formatting, so
// that dashboards and alerts built on them keep working. They are read at
// every scrape from the Go runtime and /proc; nothing is kept between
// scrapes but the pressure and throttling totals at New, which those
// counters count from.

// startTime is what process_start_time_seconds reports. VictoriaMetrics
// took it at package init too; time.Now allocates nothing, so metrics off
// still costs nothing.
var startTime = time.Now().Unix()

// runtimeSeries are the runtime/metrics samples exported, and their names.
var runtimeSeries = [...][2]string{
	{"/sched/latencies:seconds", "go_sched_latencies_seconds"},
	{"/sync/mutex/wait/total:seconds", "go_mutex_wait_seconds_total"},
	{"/cpu/classes/gc/mark/assist:cpu-seconds", "go_gc_mark_assist_cpu_seconds_total"},
	{"/cpu/classes/gc/total:cpu-seconds", "go_gc_cpu_seconds_total"},
	{"/gc/pauses:seconds", "go_gc_pauses_seconds"},
	{"/cpu/classes/scavenge/total:cpu-seconds", "go_scavenge_cpu_seconds_total"},
	{"/gc/gomemlimit:bytes", "go_memlimit_bytes"},
}

// maxRuntimeBuckets caps the buckets of a runtime histogram, which has
// about a hundred of them.
const maxRuntimeBuckets = 30

func writeUint(w *bytes.Buffer, name, typ string, v uint64) {
	b := appendMeta(w.AvailableBuffer(), name, typ)
	b = append(append(b, name...), ' ')
	w.Write(append(strconv.AppendUint(b, v, 10), '\n'))
}

// writeFloat writes v in the %g form, whole numbers included (1e+06),
// as VictoriaMetrics' WriteGaugeFloat64 and WriteCounterFloat64 did.
func writeFloat(w *bytes.Buffer, name, typ string, v float64) {
	b := appendMeta(w.AvailableBuffer(), name, typ)
	b = append(append(b, name...), ' ')
	w.Write(append(strconv.AppendFloat(b, v, 'g', -1, 64), '\n'))
}

func writeGoMetrics(w *bytes.Buffer) {
	samples := make([]rtmetrics.Sample, len(runtimeSeries))
	for i, rs := range runtimeSeries {
		samples[i].Name = rs[0]
	}
	rtmetrics.Read(samples)
	for i, rs := range runtimeSeries {
		name, v := rs[1], samples[i].Value
		typ := "gauge"
		if strings.HasSuffix(name, "_total") {
			typ = "counter"
		}
		switch v.Kind() {
		case rtmetrics.KindUint64:
			writeUint(w, name, typ, v.Uint64())
		case rtmetrics.KindFloat64:
			writeFloat(w, name, typ, v.Float64())
		case rtmetrics.KindFloat64Histogram:
			writeRuntimeHistogram(w, name, v.Float64Histogram())
		} // KindBad: not in this Go version; VictoriaMetrics skipped it too
	}

	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	for _, m := range []struct {
		name, typ string
		v         any // uint64 or float64
	}{
		{"go_memstats_alloc_bytes", "gauge", ms.Alloc},
		{"go_memstats_alloc_bytes_total", "counter", ms.TotalAlloc},
		{"go_memstats_buck_hash_sys_bytes", "gauge", ms.BuckHashSys},
		{"go_memstats_frees_total", "counter", ms.Frees},
		{"go_memstats_gc_cpu_fraction", "gauge", ms.GCCPUFraction},
		{"go_memstats_gc_sys_bytes", "gauge", ms.GCSys},
		{"go_memstats_heap_alloc_bytes", "gauge", ms.HeapAlloc},
		{"go_memstats_heap_idle_bytes", "gauge", ms.HeapIdle},
		{"go_memstats_heap_inuse_bytes", "gauge", ms.HeapInuse},
		{"go_memstats_heap_objects", "gauge", ms.HeapObjects},
		{"go_memstats_heap_released_bytes", "gauge", ms.HeapReleased},
		{"go_memstats_heap_sys_bytes", "gauge", ms.HeapSys},
		{"go_memstats_last_gc_time_seconds", "gauge", float64(ms.LastGC) / 1e9},
		{"go_memstats_lookups_total", "counter", ms.Lookups},
		{"go_memstats_mallocs_total", "counter", ms.Mallocs},
		{"go_memstats_mcache_inuse_bytes", "gauge", ms.MCacheInuse},
		{"go_memstats_mcache_sys_bytes", "gauge", ms.MCacheSys},
		{"go_memstats_mspan_inuse_bytes", "gauge", ms.MSpanInuse},
		{"go_memstats_mspan_sys_bytes", "gauge", ms.MSpanSys},
		{"go_memstats_next_gc_bytes", "gauge", ms.NextGC},
		{"go_memstats_other_sys_bytes", "gauge", ms.OtherSys},
		{"go_memstats_stack_inuse_bytes", "gauge", ms.StackInuse},
		{"go_memstats_stack_sys_bytes", "gauge", ms.StackSys},
		{"go_memstats_sys_bytes", "gauge", ms.Sys},
		{"go_cgo_calls_count", "counter", uint64(runtime.NumCgoCall())},
		{"go_cpu_count", "gauge", uint64(runtime.NumCPU())},
	} {
		switch v := m.v.(type) {
		case uint64:
			writeUint(w, m.name, m.typ, v)
		case float64:
			writeFloat(w, m.name, m.typ, v)
		}
	}

	// The last 256 GC pauses as a summary. VictoriaMetrics took the
	// quantiles from valyala/histogram, which is exact for 256 values:
	// the sorted value at phi*(n-1) rounded.
	pauses := make([]float64, len(ms.PauseNs))
	for i, ns := range ms.PauseNs {
		pauses[i] = float64(ns) / 1e9
	}
	slices.Sort(pauses)
	b := appendMeta(w.AvailableBuffer(), "go_gc_duration_seconds", "summary")
	for _, phi := range [...]float64{0, 0.25, 0.5, 0.75, 1} {
		b = strconv.AppendFloat(append(b, `go_gc_duration_seconds{quantile="`...), phi, 'g', -1, 64)
		b = strconv.AppendFloat(append(b, `"} `...), pauses[int(phi*float64(len(pauses)-1)+0.5)], 'g', -1, 64)
		b = append(b, '\n')
	}
	b = strconv.AppendFloat(append(b, "go_gc_duration_seconds_sum "...), float64(ms.PauseTotalNs)/1e9, 'g', -1, 64)
	b = strconv.AppendUint(append(b, "\ngo_gc_duration_seconds_count "...), uint64(ms.NumGC), 10)
	w.Write(append(b, '\n'))

	writeUint(w, "go_gc_forced_count", "counter", uint64(ms.NumForcedGC))
	writeUint(w, "go_gomaxprocs", "gauge", uint64(runtime.GOMAXPROCS(0)))
	writeUint(w, "go_goroutines", "gauge", uint64(runtime.NumGoroutine()))
	threads, _ := runtime.ThreadCreateProfile(nil)
	writeUint(w, "go_threads", "gauge", uint64(threads))

	b = appendMeta(w.AvailableBuffer(), "go_info", "gauge")
	b = append(strconv.AppendQuote(append(b, "go_info{version="...), runtime.Version()), "} 1\n"...)
	b = appendMeta(b, "go_info_ext", "gauge")
	b = strconv.AppendQuote(append(b, "go_info_ext{compiler="...), runtime.Compiler)
	b = strconv.AppendQuote(append(b, ", GOARCH="...), runtime.GOARCH)
	b = strconv.AppendQuote(append(b, ", GOOS="...), runtime.GOOS)
	//lint:ignore SA1019 VictoriaMetrics exported it, so the series keeps it.
	b = strconv.AppendQuote(append(b, ", GOROOT="...), runtime.GOROOT())
	w.Write(append(b, "} 1\n"...))
}

// writeRuntimeHistogram writes a runtime/metrics histogram as a Prometheus
// one without _sum and _count (the runtime has no exact sum): buckets over
// 1 s dropped into +Inf for _seconds, and at most about maxRuntimeBuckets
// of the rest, evenly spaced.
func writeRuntimeHistogram(w *bytes.Buffer, name string, h *rtmetrics.Float64Histogram) {
	bounds, counts := h.Buckets, h.Counts
	var tail uint64
	if strings.HasSuffix(name, "_seconds") {
		for len(bounds) > 0 && bounds[len(bounds)-1] > 1 {
			bounds = bounds[:len(bounds)-1]
			tail += counts[len(counts)-1]
			counts = counts[:len(counts)-1]
		}
	}
	step := float64(len(bounds)) / maxRuntimeBuckets
	next := 0.0
	var total uint64
	b := appendMeta(w.AvailableBuffer(), name, "histogram")
	for i, c := range counts {
		total += c
		if float64(i) < next {
			continue
		}
		next += step
		if le := bounds[i+1]; !math.IsInf(le, 1) {
			b = append(append(b, name...), `_bucket{le="`...)
			b = append(strconv.AppendFloat(b, le, 'g', -1, 64), `"} `...)
			b = append(strconv.AppendUint(b, total, 10), '\n')
		}
	}
	b = append(append(b, name...), `_bucket{le="+Inf"} `...)
	w.Write(append(strconv.AppendUint(b, total+tail, 10), '\n'))
}

// procStart is what the process_pressure_* and process_cgroup_* counters
// count from: their totals when New ran (VictoriaMetrics: at package init,
// which would read cgroup files even with metrics off).
type procStart struct {
	cgroupV2, cpuStat string     // paths; "" when there is none
	psi               *[6]uint64 // cpu, io, memory: some, full; nil: no PSI
	throttled         *uint64    // ns; nil: no cpu.stat
	ioErrLogged       sync.Once  // /proc/self/io's error is logged once
}

func newProcStart() *procStart {
	p := &procStart{}
	p.cgroupV2, p.cpuStat = cgroupPaths()
	if v, err := p.readPSI(); err == nil && v != nil {
		p.psi = v
	}
	if v, err := p.readThrottled(); err == nil && v != nil {
		p.throttled = v
	}
	return p
}

// writeProcessMetrics writes the process_* series; on other systems than
// Linux there is no /proc and it writes nothing, as VictoriaMetrics did.
func (p *procStart) writeProcessMetrics(w *bytes.Buffer) {
	if runtime.GOOS != "linux" {
		return
	}
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		slog.Error("metrics: cannot open /proc/self/stat", "event", "metrics", "reason", err.Error())
		return
	}
	// The fields after the command, which is in parentheses and may hold
	// anything: state ppid pgrp session tty_nr tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice num_threads
	// itrealvalue starttime vsize rss.
	var f []string
	if i := bytes.LastIndex(data, []byte(") ")); i >= 0 {
		f = strings.Fields(string(data[i+2:]))
	}
	if len(f) < 22 {
		slog.Error("metrics: cannot parse /proc/self/stat", "event", "metrics", "data", string(data))
		return
	}
	n := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
	const userHZ = 100 // clock ticks of utime and stime
	writeFloat(w, "process_cpu_seconds_system_total", "counter", float64(n(12))/userHZ)
	writeFloat(w, "process_cpu_seconds_total", "counter", float64(n(11)+n(12))/userHZ)
	writeFloat(w, "process_cpu_seconds_user_total", "counter", float64(n(11))/userHZ)
	writeUint(w, "process_major_pagefaults_total", "counter", n(9))
	writeUint(w, "process_minor_pagefaults_total", "counter", n(7))
	writeUint(w, "process_num_threads", "gauge", n(17))
	writeUint(w, "process_resident_memory_bytes", "gauge", n(21)*uint64(os.Getpagesize()))
	writeUint(w, "process_start_time_seconds", "gauge", uint64(startTime))
	writeUint(w, "process_virtual_memory_bytes", "gauge", n(20))

	if status, err := os.ReadFile("/proc/self/status"); err != nil {
		slog.Error("metrics: cannot read the memory status", "event", "metrics", "reason", err.Error())
	} else {
		for _, s := range [...][2]string{
			{"VmPeak:", "process_virtual_memory_peak_bytes"},
			{"VmHWM:", "process_resident_memory_peak_bytes"},
			{"RssAnon:", "process_resident_memory_anon_bytes"},
			{"RssFile:", "process_resident_memory_file_bytes"},
			{"RssShmem:", "process_resident_memory_shared_bytes"},
		} {
			kB, _ := field(string(status), s[0])
			writeUint(w, s[1], "gauge", kB*1024)
		}
	}

	// Written (as zeros) even when unreadable, as VictoriaMetrics did;
	// the error cannot go away without a restart, so it is logged once.
	ioStat, err := os.ReadFile("/proc/self/io")
	if err != nil {
		p.ioErrLogged.Do(func() {
			slog.Error("metrics: cannot read /proc/self/io for process_io_*", "event", "metrics", "reason", err.Error())
		})
	}
	for _, s := range [...][2]string{
		{"rchar:", "process_io_read_bytes_total"},
		{"wchar:", "process_io_written_bytes_total"},
		{"syscr:", "process_io_read_syscalls_total"},
		{"syscw:", "process_io_write_syscalls_total"},
		{"read_bytes:", "process_io_storage_read_bytes_total"},
		{"write_bytes:", "process_io_storage_written_bytes_total"},
	} {
		v, _ := field(string(ioStat), s[0])
		writeUint(w, s[1], "gauge", v) // gauges, as VictoriaMetrics typed them
	}

	if p.psi != nil {
		if psi, err := p.readPSI(); err != nil {
			slog.Error("metrics: cannot read pressure (PSI) figures", "event", "metrics", "reason", err.Error())
		} else if psi != nil {
			for i, name := range [...]string{
				"process_pressure_cpu_waiting_seconds_total", "process_pressure_cpu_stalled_seconds_total",
				"process_pressure_io_waiting_seconds_total", "process_pressure_io_stalled_seconds_total",
				"process_pressure_memory_waiting_seconds_total", "process_pressure_memory_stalled_seconds_total",
			} {
				writeFloat(w, name, "counter", float64(psi[i]-p.psi[i])/1e6) // µs
			}
		}
	}
	if p.throttled != nil {
		if ns, err := p.readThrottled(); err != nil {
			slog.Error("metrics: cannot read the cgroup's cpu.stat", "event", "metrics", "reason", err.Error())
		} else if ns != nil {
			writeFloat(w, "process_cgroup_cpu_throttled_seconds_total", "counter", float64(*ns-*p.throttled)/1e9)
		}
	}
}

// field returns the number after the line that starts with key, as in
// /proc/self/status ("VmHWM:   1234 kB") and /proc/self/io.
func field(text, key string) (uint64, bool) {
	for line := range strings.Lines(text) {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0, false
			}
			v, err := strconv.ParseUint(f[0], 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// readPSI reads the cgroup's pressure totals (µs): nil without cgroup v2.
func (p *procStart) readPSI() (*[6]uint64, error) {
	if p.cgroupV2 == "" {
		return nil, nil
	}
	var v [6]uint64
	for i, file := range [...]string{"cpu.pressure", "io.pressure", "memory.pressure"} {
		data, err := os.ReadFile(p.cgroupV2 + "/" + file)
		if err != nil {
			return nil, err
		}
		for line := range strings.Lines(string(data)) {
			line = strings.TrimSpace(line)
			j := 0 // some
			if strings.HasPrefix(line, "full ") {
				j = 1
			} else if !strings.HasPrefix(line, "some ") {
				continue
			}
			_, total, _ := strings.Cut(line, "total=")
			n, err := strconv.ParseUint(total, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("cannot parse total=%q at %q: %w", total, p.cgroupV2+"/"+file, err)
			}
			v[2*i+j] = n
		}
	}
	return &v, nil
}

// readThrottled reads the cgroup's CPU throttled time (ns): nil without a
// cpu controller.
func (p *procStart) readThrottled() (*uint64, error) {
	if p.cpuStat == "" {
		return nil, nil
	}
	data, err := os.ReadFile(p.cpuStat)
	if os.IsNotExist(err) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var ns uint64
	if v, ok := field(string(data), "throttled_usec "); ok { // cgroup v2
		ns = v * 1000
	} else if v, ok := field(string(data), "throttled_time "); ok { // v1
		ns = v
	}
	return &ns, nil
}

// cgroupPaths returns the process's cgroup v2 directory (for PSI) and its
// cpu.stat, as VictoriaMetrics found them; "" for none.
func cgroupPaths() (v2, cpuStat string) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", ""
	}
	mount := ""
	for _, mp := range [...]string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		// Only the root of a cgroup2 mount has cgroup.controllers
		// (VictoriaMetrics asked statfs for the cgroup2 magic).
		if _, err := os.Stat(mp + "/cgroup.controllers"); err == nil {
			mount = mp
			break
		}
	}
	var rel1 string
	for line := range strings.Lines(string(data)) {
		parts := strings.SplitN(strings.TrimRight(line, "\n"), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" && mount != "" && v2 == "" {
			v2 = path.Join(mount, strings.TrimSpace(parts[2]))
		}
		if rel1 == "" && slices.Contains(strings.Split(parts[1], ","), "cpu") {
			rel1 = strings.TrimSpace(parts[2])
		}
	}
	if mount == "/sys/fs/cgroup" {
		if v2 == "" {
			return "", ""
		}
		return v2, v2 + "/cpu.stat"
	}
	if rel1 != "" {
		cpuStat = path.Join("/sys/fs/cgroup/cpu", rel1, "/cpu.stat")
	}
	return v2, cpuStat
}
