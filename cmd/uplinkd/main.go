// Command uplinkd keeps a Linux gateway's uplinks working: one binary with
// the daemon (run) and its tools (check, plan, flush). See docs/design.md.
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
	"slices"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/uplinkd/uplinkd/firewall"
	"github.com/uplinkd/uplinkd/internal/daemon"
	"github.com/uplinkd/uplinkd/internal/journald"
	"github.com/uplinkd/uplinkd/internal/kernel"
	"github.com/uplinkd/uplinkd/internal/netnsx"
	"github.com/uplinkd/uplinkd/policy"
	"golang.org/x/sys/unix"
)

const usage = `usage: uplinkd COMMAND [flags] [PATH]

PATH (or --config PATH) is the configuration file; default ` + policy.DefaultConfigPath + `.

commands:
  run   [--flush-on-exit] [PATH]
                          run the daemon (systemd Type=notify); needs CAP_NET_ADMIN. A stop
                          leaves routes, rules and NAT in place; --flush-on-exit removes what
                          uplinkd owns (like flush) when it stops on SIGTERM or SIGINT
  check [--strict] [PATH] validate the config; PATH:LINE:COL: message per problem
                          (warnings too; --strict fails on warnings)
  plan  [PATH]            print what run would change now: ip/sysctl commands, then the firewall batch
  flush [PATH]            remove every rule, route and firewall table/chain uplinkd owns

flags:
  --config PATH           the configuration file
  --log-format FORMAT     auto (journal under systemd, else text) | text | json | journal
` + controlUsage

// Exit codes. exitConfig is sysexits' EX_CONFIG: `uplinkd run` exits with it
// on a config it will not run, and the systemd unit lists it in
// RestartPreventExitStatus so that a broken file is not retried forever.
const (
	exitFailure = 1
	exitUsage   = 2
	exitConfig  = 78
)

var logFormats = []string{"auto", "text", "json", "journal"}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, args := args[0], args[1:]
	if code, ok := runControl(cmd, args, stdout, stderr); ok {
		return code
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	configPath := fs.String("config", policy.DefaultConfigPath, "configuration file")
	logFormat := fs.String("log-format", "auto", "log format: "+strings.Join(logFormats, " | "))
	strict, flushOnExit := false, false
	switch cmd {
	case "check":
		fs.BoolVar(&strict, "strict", false, "exit 1 on warnings too")
	case "run":
		fs.BoolVar(&flushOnExit, "flush-on-exit", false, "remove everything uplinkd owns when it stops")
	case "plan", "flush":
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "uplinkd: unknown command %q\n%s", cmd, usage)
		return exitUsage
	}
	// Flags may come before or after the path, as in `check PATH --strict`.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return exitUsage
		}
		if fs.NArg() == 0 {
			break
		}
		positional, args = append(positional, fs.Arg(0)), fs.Args()[1:]
	}
	path, err := configArg(fs, *configPath, positional)
	if err != nil {
		fmt.Fprintf(stderr, "uplinkd %s: %v\n", cmd, err)
		return exitUsage
	}
	if !slices.Contains(logFormats, *logFormat) {
		fmt.Fprintf(stderr, "uplinkd: --log-format must be one of %s (got %q)\n", strings.Join(logFormats, ", "), *logFormat)
		return exitUsage
	}
	if *logFormat == "journal" && !journal.Enabled() {
		// Writing to a journal that is not there would drop every line.
		fmt.Fprintln(stderr, "uplinkd: --log-format journal: journald is not available (no /run/systemd/journal/socket); use text or json")
		return exitUsage
	}

	// Config problems are exit 1 for the tools and EX_CONFIG for run.
	badConfig := exitFailure
	if cmd == "run" {
		badConfig = exitConfig
	}
	cfg, err := daemon.LoadConfig(path)
	if err != nil {
		printConfigError(stderr, err)
		return badConfig
	}
	for _, line := range cfg.Warnings.Lines() {
		fmt.Fprintln(stderr, line)
	}
	// Hook dir, publisher secrets, DHCP: checked by check and run alike.
	if cmd == "check" || cmd == "run" {
		if err := daemon.CheckConfig(cfg); err != nil {
			fmt.Fprintln(stderr, err)
			return badConfig
		}
	}
	log := newLogger(stderr, *logFormat, string(cfg.Daemon.LogLevel))

	switch cmd {
	case "check":
		if strict && len(cfg.Warnings) > 0 {
			fmt.Fprintf(stderr, "%s: %d warning(s), failing because of --strict\n", cfg.Path, len(cfg.Warnings))
			return exitFailure
		}
		fmt.Fprintf(stdout, "%s: ok (%d uplinks, %d rules)\n", cfg.Path, len(cfg.Uplinks), len(cfg.Rules))
		return 0
	case "plan":
		return plan(cfg, stdout, stderr)
	case "flush":
		return flush(cfg, stdout, stderr)
	}

	if err := cfg.CheckRunnable(); err != nil {
		fmt.Fprintf(stderr, "uplinkd: %v\n", err)
		return exitConfig
	}
	if err := needNetAdmin(); err != nil {
		// Without it every netlink write fails with EPERM, and the loop
		// would retry that forever.
		fmt.Fprintf(stderr, "uplinkd: %v\n", err)
		return exitFailure
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := daemon.Open(daemon.Options{ConfigPath: path, NetNS: -1, Logger: log, Signals: true,
		WatchConfig: true, FlushOnExit: flushOnExit, Version: version})
	if err != nil {
		printConfigError(stderr, err)
		if policy.IsProblems(err) || errors.Is(err, policy.ErrNoUplinks) || daemon.IsConfigError(err) {
			return exitConfig
		}
		return exitFailure
	}
	log.Info("uplinkd starting", "event", "start", "config", cfg.Path, "uplinks", len(cfg.Uplinks), "version", version)
	if err := d.Run(ctx); err != nil {
		log.Error("uplinkd stopped", "reason", err.Error())
		return exitFailure
	}
	log.Info("uplinkd stopped", "event", "stop")
	return 0
}

// configArg is the config path: the one positional argument, or --config.
// Both at once must agree.
func configArg(fs *flag.FlagSet, flagPath string, positional []string) (string, error) {
	switch len(positional) {
	case 0:
		return flagPath, nil
	case 1:
		setByFlag := false
		fs.Visit(func(f *flag.Flag) { setByFlag = setByFlag || f.Name == "config" })
		if setByFlag && flagPath != positional[0] {
			return "", fmt.Errorf("two config files given: --config %s and %s", flagPath, positional[0])
		}
		return positional[0], nil
	default:
		return "", fmt.Errorf("one config file at most (got %s)", strings.Join(positional, " "))
	}
}

// capNetAdmin is CAP_NET_ADMIN's bit in the capability sets.
const capNetAdmin = 12

// needNetAdmin reports an error unless the process has CAP_NET_ADMIN in
// its effective set: root normally has it, a non-root user granted it
// (AmbientCapabilities=CAP_NET_ADMIN in a unit) does too.
func needNetAdmin() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("reading capabilities: %w", err)
	}
	if data[0].Effective&(1<<capNetAdmin) == 0 {
		return fmt.Errorf("uplinkd run needs root (CAP_NET_ADMIN) to change routes, rules and the firewall; run it as root or from the systemd unit (uid %d has no CAP_NET_ADMIN)", os.Getuid())
	}
	return nil
}

func printConfigError(w io.Writer, err error) {
	var probs policy.Problems
	if errors.As(err, &probs) {
		for _, line := range probs.Lines() {
			fmt.Fprintln(w, line)
		}
		return
	}
	fmt.Fprintf(w, "uplinkd: %v\n", err)
}

// newLogger: journald entries with the same fields when the daemon runs
// under systemd (stderr is the journal), else text or JSON on stderr. The
// format is validated by the caller.
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
	k.SetTables(cfg.Tables())
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
