// Command uplinkd keeps a Linux gateway's uplinks working: one binary with
// the daemon (run) and its tools (check, plan, flush). See DESIGN.md §3.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/uplinkd/uplinkd/firewall"
	"github.com/uplinkd/uplinkd/internal/daemon"
	"github.com/uplinkd/uplinkd/internal/journald"
	"github.com/uplinkd/uplinkd/internal/kernel"
	"github.com/uplinkd/uplinkd/internal/netnsx"
	"github.com/uplinkd/uplinkd/policy"
)

const usage = `usage: uplinkd COMMAND [flags]

commands:
  run   --config PATH   run the daemon (systemd Type=notify)
  check --config PATH   validate the config; PATH:LINE:COL: message per problem
  plan  --config PATH   print what run would change now: ip/sysctl commands, then the firewall batch
  flush --config PATH   remove every rule, route and firewall table/chain uplinkd owns
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", policy.DefaultConfigPath, "configuration file")
	logFormat := fs.String("log-format", "auto", "log format: auto (journal under systemd, else text) | text | json | journal")
	switch cmd {
	case "run", "check", "plan", "flush":
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "uplinkd: unknown command %q\n%s", cmd, usage)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}

	cfg, err := daemon.LoadConfig(*configPath)
	if err != nil {
		printConfigError(stderr, err)
		return 1
	}
	log := newLogger(stderr, *logFormat, cfg.Daemon.LogLevel)

	switch cmd {
	case "check":
		fmt.Fprintf(stdout, "%s: ok (%d uplinks, %d rules)\n", cfg.Path, len(cfg.Uplinks), len(cfg.Rules))
		return 0
	case "plan":
		return plan(cfg, stdout, stderr)
	case "flush":
		return flush(cfg, stdout, stderr)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := daemon.New(daemon.Options{ConfigPath: *configPath, NetNS: -1, Logger: log, Signals: true})
	if err != nil {
		printConfigError(stderr, err)
		return 1
	}
	log.Info("uplinkd starting", "event", "start", "config", cfg.Path, "uplinks", len(cfg.Uplinks))
	if err := d.Run(ctx); err != nil {
		log.Error("uplinkd stopped", "reason", err.Error())
		return 1
	}
	log.Info("uplinkd stopped", "event", "stop")
	return 0
}

func printConfigError(w io.Writer, err error) {
	var probs policy.Problems
	if errors.As(err, &probs) {
		for _, p := range probs {
			fmt.Fprintln(w, p.String())
		}
		return
	}
	fmt.Fprintf(w, "uplinkd: %v\n", err)
}

// newLogger: journald entries with the same fields when the daemon runs
// under systemd (stderr is the journal), else text or JSON on stderr.
func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "journal" || (format == "auto" && journald.Available()) {
		return slog.New(journald.New(lv, nil))
	}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// openAndSnapshot opens netlink in this process's namespace and reads the
// kernel state (the routes of cfg's uplink tables in full); the caller
// closes the kernel.
func openAndSnapshot(cfg *policy.Config) (*kernel.Kernel, policy.Observed, error) {
	k, err := kernel.Open(netnsx.Own, nil)
	if err != nil {
		return nil, policy.Observed{}, err
	}
	tables := make([]int, 0, len(cfg.Uplinks))
	for _, u := range cfg.Uplinks {
		tables = append(tables, u.TableID)
	}
	k.SetTables(tables)
	obs, err := k.Snapshot()
	if err != nil {
		k.Close()
		return nil, policy.Observed{}, err
	}
	return k, obs, nil
}

// plan prints the diff the daemon would apply now, reading but never writing.
func plan(cfg *policy.Config, stdout, stderr io.Writer) int {
	k, obs, err := openAndSnapshot(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "uplinkd: %v\n", err)
		return 1
	}
	defer k.Close()
	desired := policy.Compute(cfg, obs, nil)
	if obs.Sysctls, err = k.ReadSysctls(desired.SysctlKeys()); err != nil {
		fmt.Fprintf(stderr, "uplinkd: %v\n", err)
		return 1
	}
	changes := policy.Diff(desired, obs)
	for _, st := range desired.Uplinks {
		fmt.Fprintf(stdout, "# uplink %s\n", st)
	}
	if len(changes) == 0 {
		fmt.Fprintln(stdout, "# routing: nothing to change")
	}
	for _, c := range changes {
		fmt.Fprintln(stdout, c.Command())
	}

	fw, err := firewall.FromConfig(cfg.Firewall, 0, nil)
	if err != nil {
		fmt.Fprintf(stderr, "uplinkd: firewall: %v\n", err)
		return 1
	}
	defer fw.Close()
	rs := firewall.Compute(firewall.Input{Config: cfg, Uplinks: desired.Uplinks})
	for _, w := range rs.Warnings {
		fmt.Fprintf(stdout, "# firewall warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "# firewall (%s): the whole state uplinkd keeps, loaded in one batch\n", cfg.Firewall.Backend)
	fmt.Fprint(stdout, fw.Plan(rs))
	return 0
}

// flush removes every owned rule and route, whatever the config says (an
// uplink deleted from the config must not leave rules behind), and the
// firewall state of the configured backend.
func flush(cfg *policy.Config, stdout, stderr io.Writer) int {
	k, obs, err := openAndSnapshot(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "uplinkd: %v\n", err)
		return 1
	}
	defer k.Close()
	changes := policy.FlushChanges(obs)
	for _, c := range changes {
		fmt.Fprintln(stdout, c.Command())
	}
	if err := k.Apply(changes, obs); err != nil {
		fmt.Fprintf(stderr, "uplinkd: flush: %v\n", err)
		return 1
	}
	fw, err := firewall.FromConfig(cfg.Firewall, 0, nil)
	if err != nil {
		fmt.Fprintf(stderr, "uplinkd: firewall: %v\n", err)
		return 1
	}
	defer fw.Close()
	if err := fw.Flush(); err != nil {
		fmt.Fprintf(stderr, "uplinkd: flush firewall: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "# firewall (%s): owned state removed\n", cfg.Firewall.Backend)
	return 0
}
