package hooks

import (
	"os/exec"
	"runtime"
	"sync"
)

// Every external program uplinkd runs is started with Pdeathsig=SIGKILL, so
// that the kernel kills it when the daemon dies, even by `kill -9` (a hook
// must never outlive the daemon and linger under PID 1).
//
// The catch: the kernel sends the parent-death signal when the *thread* that
// forked the child exits, not the process. Go threads normally live as long
// as the process, but the runtime ends a thread when a goroutine that locked
// it (runtime.LockOSThread, as namespace-switching code does) returns without
// unlocking. A child forked from an ordinary goroutine could be running on
// such a thread a moment later, and would then be killed for no reason.
//
// So all children are forked by one goroutine that locks its thread for good
// and never returns: its thread lives exactly as long as the process. Starts
// are serialized through it; fork+exec takes about a millisecond, and Wait
// runs on the caller's goroutine, so nothing long-running is serialized.

type startRequest struct {
	cmd  *exec.Cmd
	done chan error
}

var starter struct {
	once sync.Once
	reqs chan startRequest
}

// StartProcess runs cmd.Start on the dedicated starter thread. Besides
// runCommand, it starts uplinkd-helper (internal/helper), which needs its
// stdin and stdout and so cannot go through RunCommand; set Pdeathsig in
// cmd.SysProcAttr for the kernel to kill the child with the daemon.
func StartProcess(cmd *exec.Cmd) error {
	starter.once.Do(func() {
		starter.reqs = make(chan startRequest)
		go processStarter(starter.reqs)
	})
	done := make(chan error, 1)
	starter.reqs <- startRequest{cmd: cmd, done: done}
	return <-done
}

// processStarter never returns and never unlocks its thread (see above). It
// is the one goroutine of this package that is not owned by an object with a
// Close; leak checks in tests ignore it by name.
func processStarter(reqs <-chan startRequest) {
	runtime.LockOSThread()
	for r := range reqs {
		r.done <- r.cmd.Start()
	}
}
