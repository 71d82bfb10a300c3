package netnsx

import "github.com/vishvananda/netns"

// SetSwitch replaces the namespace switch for one test and returns a restore
// function: a switch back that fails cannot be provoked with real handles.
func SetSwitch(f func(netns.NsHandle) error) (restore func()) {
	old := switchTo
	switchTo = f
	return func() { switchTo = old }
}
