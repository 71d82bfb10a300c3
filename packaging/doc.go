// Package packaging holds no Go code: it is the home of what installs
// uplinkd on a host (the systemd unit, the ppp, ifupdown and
// networkd-dispatcher scripts, the default configuration, the nfpm recipe of
// the .deb and its maintainer scripts), and of the tests that run those
// scripts and check the .deb that `make deb` builds.
package packaging
