// Command uplinkd keeps a Linux gateway's uplinks working: one binary with
// the daemon (run) and its tools (check, plan, flush). See docs/design.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/uplinkd/uplinkd/firewall"
	"github.com/uplinkd/uplinkd/internal/daemon"
	"github.com/uplinkd/uplinkd/internal/delegstate"
	"github.com/uplinkd/uplinkd/internal/drainstate"
	"github.com/uplinkd/uplinkd/internal/earlysig"
	"github.com/uplinkd/uplinkd/internal/journald"
	"github.com/uplinkd/uplinkd/internal/kernel"
	"github.com/uplinkd/uplinkd/internal/netnsx"
	"github.com/uplinkd/uplinkd/policy"
	"golang.org/x/sys/unix"
)

var logFormats = []string{"auto", "text", "json", "journal"}

func main() {
	// SIGHUP is caught from package initialisation on (internal/earlysig,
	// imported above): no command of uplinkd dies of it.
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "help", "-h", "-help", "--help":
		return help(args, stdout, stderr)
	case "version", "-version", "--version", "-V":
		if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprint(stdout, commandHelp["version"])
			return exitOK
		}
		if len(args) > 0 {
			return usageError(stderr, "version", fmt.Errorf("unexpected argument %q", args[0]))
		}
		printVersion(stdout)
		return exitOK
	}
	if code, ok := runControl(cmd, args, stdout, stderr); ok {
		return code
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	// Parse errors are printed as one line by usageError.
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", policy.DefaultConfigPath, "configuration file")
	logFormat := fs.String("log-format", "auto", "log format: "+strings.Join(logFormats, " | "))
	strict, flushOnExit, condition := false, false, false
	switch cmd {
	case "check":
		fs.BoolVar(&strict, "strict", false, "exit 1 on warnings too")
		fs.BoolVar(&condition, "condition", false, "the unit's ExecCondition: exit 1 only when there is nothing to run")
	case "run":
		fs.BoolVar(&flushOnExit, "flush-on-exit", false, "remove everything uplinkd owns when it stops")
	case "plan", "flush":
	default:
		fmt.Fprintf(stderr, "uplinkd: unknown command %q; commands: %s (see uplinkd help)\n", cmd, commandNames())
		return exitUsage
	}
	// Flags may come before or after the path, as in `check PATH --strict`.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, commandHelp[cmd])
				return exitOK
			}
			return usageError(stderr, cmd, err)
		}
		if fs.NArg() == 0 {
			break
		}
		positional, args = append(positional, fs.Arg(0)), fs.Args()[1:]
	}
	path, err := configArg(fs, *configPath, positional)
	if err != nil {
		return usageError(stderr, cmd, err)
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

	if condition {
		if strict {
			return usageError(stderr, cmd, errors.New("--condition and --strict exclude each other"))
		}
		return startCondition(path, stdout)
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
	// check and run refuse alike, with the same lines: check predicts run.
	if cmd == "check" || cmd == "run" {
		if !preflight(cfg, stderr) {
			return badConfig
		}
	} else {
		for _, line := range cfg.Warnings.Lines() {
			fmt.Fprintln(stderr, line)
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

	if err := needNetAdmin(); err != nil {
		// Without it every netlink write fails with EPERM, and the loop
		// would retry that forever.
		fmt.Fprintf(stderr, "uplinkd: %v\n", err)
		return exitFailure
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	loopRuns := make(chan struct{})
	var once sync.Once
	d, err := daemon.Open(daemon.Options{ConfigPath: path, NetNS: -1, Logger: log, Signals: true,
		WatchConfig: true, FlushOnExit: flushOnExit, Version: version,
		// The first pass is made by the loop, whose SIGHUP handler is in
		// place by then.
		OnSync: func(daemon.SyncResult) { once.Do(func() { close(loopRuns) }) }})
	if err != nil {
		printConfigError(stderr, err)
		if policy.IsProblems(err) || errors.Is(err, policy.ErrNoUplinks) || daemon.IsConfigError(err) {
			return exitConfig
		}
		return exitFailure
	}
	log.Info("uplinkd starting", "event", "start", "config", cfg.Path, "uplinks", len(cfg.Uplinks), "version", version)
	var early sync.WaitGroup
	early.Go(func() { earlyReload(ctx, d, log, loopRuns) })
	defer early.Wait()
	if err := d.Run(ctx); err != nil {
		log.Error("uplinkd stopped", "reason", err.Error())
		return exitFailure
	}
	log.Info("uplinkd stopped", "event", "stop")
	return 0
}

// earlyReload hands the loop the SIGHUPs that arrived while the daemon
// started (caught by internal/earlysig) as one reload, once the loop runs
// and handles SIGHUP itself. The config read at start may predate the
// signal, so the reload is not skipped.
func earlyReload(ctx context.Context, d *daemon.Daemon, log *slog.Logger, loopRuns <-chan struct{}) {
	select {
	case <-loopRuns:
	case <-ctx.Done():
		return
	}
	earlysig.Stop()
	if !earlysig.Pending() {
		return
	}
	log.Info("SIGHUP received while starting; reloading now", "event", "config-reload", "reason", "SIGHUP before the loop ran")
	if err := d.Reload(ctx); err != nil && ctx.Err() == nil {
		log.Warn("reload after an early SIGHUP failed; the running config stays", "event", "config-reload", "reason", err.Error())
	}
}

// preflight prints the config's warnings and runs the refusals that `run`
// makes before it starts (daemon.CheckConfig: hook directory, secrets,
// DHCP; Config.CheckRunnable: no [[uplink]]). It reports whether run would
// start. A warning about what run refuses is printed as the error it is.
func preflight(cfg *policy.Config, stderr io.Writer) bool {
	runnable := cfg.CheckRunnable()
	promoted := false
	lines := slices.Clone(cfg.Warnings)
	for i, w := range lines {
		if runnable != nil && errors.Is(runnable, policy.ErrNoUplinks) && w.Msg == policy.NoUplinksWarning && !promoted {
			lines[i].Warning, lines[i].Msg, promoted = false, policy.ErrNoUplinks.Error(), true
		}
	}
	for _, line := range lines.Lines() {
		fmt.Fprintln(stderr, line)
	}
	ok := true
	if err := daemon.CheckConfig(cfg); err != nil {
		fmt.Fprintln(stderr, err)
		ok = false
	}
	if runnable != nil {
		if !promoted {
			fmt.Fprintf(stderr, "uplinkd: %v\n", runnable)
		}
		ok = false
	}
	return ok
}

// startCondition is `check --condition`, the unit's ExecCondition=. systemd
// skips the unit, without marking it failed, when an ExecCondition command
// exits 1..254, and fails it on 255. So it exits 1 only when there is
// nothing to run yet: the file is missing, or it is a clean file without
// any [[uplink]] (and without [daemon] allow_no_uplinks), as the package
// installs it. Anything else, a broken file included, exits 0: `run` then
// refuses a broken file with its problems and exit 78, so the unit fails as
// it did before and RestartPreventExitStatus=78 keeps it from being retried.
// (Exiting 78 here would only skip the unit and hide the mistake.)
func startCondition(path string, stdout io.Writer) int {
	cfg, err := daemon.LoadConfig(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(stdout, "%s: no such file; uplinkd is not started until it describes an uplink\n", path)
		return exitFailure
	case err != nil:
		return exitOK
	}
	if errors.Is(cfg.CheckRunnable(), policy.ErrNoUplinks) && daemon.CheckConfig(cfg) == nil {
		fmt.Fprintf(stdout, "%s: no [[uplink]] configured; uplinkd is not started until one is (or [daemon] allow_no_uplinks = true)\n", cfg.Path)
		return exitFailure
	}
	return exitOK
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
	drained := planDrained(cfg, stdout, stderr)
	obs.Delegated = planDelegated(cfg, time.Now(), stdout, stderr)
	desired := policy.ComputeFrom(cfg, obs, policy.LinkStates(cfg, obs), nil, drained)
	if obs.Sysctls, err = k.ReadSysctls(desired.SysctlKeys()); err != nil {
		fmt.Fprintf(stderr, "uplinkd: %v\n", err)
		return 1
	}
	changes := policy.Diff(desired, obs)
	planNumbers(cfg, stdout)
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
	rs := firewall.Compute(firewall.Input{Config: cfg, Uplinks: desired.Uplinks, NPT6: policy.NPT6Maps(cfg, obs)})
	fmt.Fprintf(stdout, "# firewall (%s): the whole state uplinkd keeps, loaded in one batch\n", cfg.Firewall.Backend)
	fmt.Fprint(stdout, fw.Plan(rs))
	return 0
}

// planNumbers prints the table and rule priority the loader chose for each
// uplink that leaves them out. Uplinks with both set print nothing, so a
// file with explicit numbers plans exactly as before defaults existed.
func planNumbers(cfg *policy.Config, w io.Writer) {
	for i, u := range cfg.Uplinks {
		var parts []string
		if u.TableDefaulted {
			parts = append(parts, fmt.Sprintf("table %d", u.Table))
		}
		if u.RulePriorityDefaulted {
			parts = append(parts, fmt.Sprintf("rule_priority %d", u.RulePriority))
		}
		if len(parts) > 0 {
			fmt.Fprintf(w, "# uplink %s: %s (defaults for position %d)\n", u.Name, strings.Join(parts, ", "), i+1)
		}
	}
}

// planDrained reads the drain state the daemon keeps (read only: a corrupt
// file is reported and left for the daemon to move aside), so that plan
// shows what the daemon does. Names the config has no uplink of are
// reported and ignored, as the daemon does.
func planDrained(cfg *policy.Config, stdout, stderr io.Writer) policy.Drained {
	set, err := drainstate.Read(drainstate.Path(cfg.Daemon.StateDir))
	if err != nil {
		fmt.Fprintf(stderr, "uplinkd plan: warning: %v\n", err)
	}
	var drained policy.Drained
	for _, n := range set.Names() {
		if cfg.UplinkByName(n) == nil {
			fmt.Fprintf(stderr, "uplinkd plan: warning: drained uplink %q is not in the config; ignoring it\n", n)
			continue
		}
		if drained == nil {
			drained = policy.Drained{}
		}
		drained[n] = true
		fmt.Fprintf(stdout, "# drained %s (uplinkd undrain %s puts it back)\n", n, n)
	}
	return drained
}

// planDelegated reads the delegated prefixes the daemon learned (read
// only, like planDrained), without those whose time is over, and names
// what each IPv6 uplink delegates to the LAN.
func planDelegated(cfg *policy.Config, now time.Time, stdout, stderr io.Writer) map[string][]netip.Prefix {
	set, err := delegstate.Read(delegstate.Path(cfg.Daemon.StateDir))
	if err != nil {
		fmt.Fprintf(stderr, "uplinkd plan: warning: %v\n", err)
	}
	set.Expire(now)
	learned := set.Prefixes()
	if cfg.LAN.IPv6.Mode == policy.LAN6Off {
		return learned
	}
	for i := range cfg.Uplinks {
		u := &cfg.Uplinks[i]
		if ps, src := policy.Delegated(u, policy.Observed{Delegated: learned}); u.IPv6 && len(ps) > 0 {
			fmt.Fprintf(stdout, "# uplink %s delegated %s (%s)\n", u.Name, ps[0], src)
		}
	}
	return learned
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
