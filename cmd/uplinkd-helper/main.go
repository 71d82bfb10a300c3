// Command uplinkd-helper runs, for the uplinkd daemon, the work that talks
// HTTP, TLS or DNS to servers outside the gateway: publishing an address
// with dyndns2 or RFC 2136, and one http health probe. The daemon starts it
// on demand, one process per publish, check or probe, so that its own
// binary stays free of net/http, crypto/tls, x509 and miekg/dns and small
// in memory (docs/design.md, "The helper binary"). It is not meant to be
// run by hand; its interface is argv, stdin and stdout:
//
//	uplinkd-helper publish-check < request.json     exit 0, or 1 and the reason on stderr
//	uplinkd-helper publish < request.json           the reply (JSON) on stdout
//	uplinkd-helper http-probe --connect ADDR:PORT --timeout D [--source IP] [--iface IF] [--netns-fd N] -- URL
//
// Exit codes: 0 done, 1 failed (stderr says why), 2 bad usage, 3 the probe
// timed out.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/uplinkd/uplinkd/internal/helper"
	"github.com/uplinkd/uplinkd/internal/netnsx"
	"github.com/uplinkd/uplinkd/publish"
	"github.com/uplinkd/uplinkd/publish/remote"
	"github.com/uplinkd/uplinkd/watcher/probe"
	"github.com/uplinkd/uplinkd/watcher/probe/httpprobe"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "usage: %s publish-check|publish|http-probe ... (run by uplinkd)\n", helper.Name)
		return helper.ExitUsage
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, err)
		return helper.ExitFailed
	}
	switch args[0] {
	case publish.HelperCheck, publish.HelperPublish:
		if len(args) != 1 {
			fmt.Fprintf(stderr, "%s takes no arguments\n", args[0])
			return helper.ExitUsage
		}
		if err := remote.ServeHelper(ctx, stdin, stdout, args[0] == publish.HelperCheck); err != nil {
			return fail(err)
		}
		return 0
	case probe.HelperHTTP:
		req, err := parseHTTPProbe(args[1:])
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", probe.HelperHTTP, err)
			return helper.ExitUsage
		}
		rtt, err := httpprobe.Get(ctx, req)
		if errors.Is(err, httpprobe.ErrTimeout) {
			return helper.ExitTimeout
		}
		if err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, rtt.Nanoseconds())
		return 0
	default:
		fmt.Fprintf(stderr, "unknown subcommand %q\n", args[0])
		return helper.ExitUsage
	}
}

func parseHTTPProbe(args []string) (httpprobe.Request, error) {
	var (
		req             httpprobe.Request
		connect, source string
		fs              = flag.NewFlagSet(probe.HelperHTTP, flag.ContinueOnError)
		errArgs         = errors.New("want --connect ADDR:PORT --timeout D [--source IP] [--iface IF] -- URL")
	)
	fs.SetOutput(io.Discard)
	fs.StringVar(&connect, "connect", "", "")
	fs.StringVar(&source, "source", "", "")
	fs.StringVar(&req.Iface, "iface", "", "")
	fs.DurationVar(&req.Timeout, "timeout", 0, "")
	fs.IntVar(&req.NetNS, "netns-fd", int(netnsx.Own), "")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 || req.Timeout <= 0 {
		return req, errArgs
	}
	req.URL = fs.Arg(0)
	var err error
	if req.Connect, err = netip.ParseAddrPort(connect); err != nil {
		return req, fmt.Errorf("--connect: %w", err)
	}
	if source != "" {
		if req.Source, err = netip.ParseAddr(source); err != nil {
			return req, fmt.Errorf("--source: %w", err)
		}
	}
	return req, nil
}
