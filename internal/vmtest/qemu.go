package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// bannerTimeout is how long a KVM boot may stay silent before it counts as
// broken: a working KVM prints the kernel banner within a second or two.
// (On some hosts KVM hangs after "Booting from ROM" with stock kernels.)
const bannerTimeout = 20 * time.Second

// Boot describes one VM run.
type Boot struct {
	Image    *Image
	DataDisk string        // ext4 image: the scenarios in, results out
	Console  string        // file receiving the serial console
	Timeout  time.Duration // the whole run, boot to power-off
	Logf     func(string, ...any)
}

// BootResult says how the VM ran.
type BootResult struct {
	Accel   string
	Elapsed time.Duration
}

// accelCache remembers, per host kernel and qemu, whether KVM boots the
// image, so only the first run pays for the probe.
func accelCache() string {
	rel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return filepath.Join(CacheRoot, ".accel-"+strings.TrimSpace(string(rel)))
}

// Run boots the VM and waits for it to power off. KVM is tried first
// (unless UPLINKD_VM_ACCEL says otherwise or an earlier run found it
// broken); when the kernel banner does not appear in time the VM is
// killed and booted again under tcg.
func (b *Boot) Run(ctx context.Context) (BootResult, error) {
	accels := []string{"kvm", "tcg"}
	if a := os.Getenv("UPLINKD_VM_ACCEL"); a != "" {
		accels = []string{a}
	} else if data, err := os.ReadFile(accelCache()); err == nil && strings.TrimSpace(string(data)) == "tcg" {
		accels = []string{"tcg"}
	} else if _, err := os.Stat("/dev/kvm"); err != nil {
		accels = []string{"tcg"}
	}
	var lastErr error
	for i, accel := range accels {
		start := time.Now()
		probe := accel == "kvm" && i < len(accels)-1
		err := b.runOnce(ctx, accel, probe)
		if errors.Is(err, errNoBanner) {
			b.Logf("qemu: no kernel under %s (nothing printed within %s, or qemu died); falling back to tcg", accel, bannerTimeout)
			_ = os.WriteFile(accelCache(), []byte("tcg\n"), 0o644)
			lastErr = err
			continue
		}
		return BootResult{Accel: accel, Elapsed: time.Since(start)}, err
	}
	return BootResult{}, lastErr
}

var errNoBanner = errors.New("vmtest: the kernel printed nothing")

func (b *Boot) runOnce(ctx context.Context, accel string, probe bool) error {
	ctx, cancel := context.WithTimeout(ctx, b.Timeout)
	defer cancel()
	args := []string{
		"-accel", accel,
		"-m", "1024", "-smp", "2",
		"-nographic", "-no-reboot",
		// No network device at all: every network the scenarios use lives
		// in the VM's own namespaces, and the host's stays untouched.
		"-nic", "none",
		"-kernel", b.Image.Kernel, "-initrd", b.Image.Initrd,
		"-append", strings.Join([]string{
			"console=ttyS0", "root=/dev/vda", "rw", "loglevel=6",
			"systemd.unit=vmtest.target", "systemd.show_status=0",
			"net.ifnames=0", "panic=-1", "mitigations=off",
			"rd.udev.log_level=3", "udev.log_level=3",
		}, " "),
		// snapshot=on: the cached image is never written.
		"-drive", "file=" + b.Image.RootFS + ",format=raw,if=virtio,snapshot=on",
		"-drive", "file=" + b.DataDisk + ",format=raw,if=virtio",
	}
	if accel == "tcg" {
		// All the instructions the stock kernel may use, emulated.
		args = append(args, "-cpu", "max")
	}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.Stdin = nil
	// A test binary killed by a signal must not leave the VM running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	console, err := os.Create(b.Console)
	if err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	defer console.Close()

	banner := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := bufio.NewReader(pr)
		var line bytes.Buffer
		for {
			c, err := r.ReadByte()
			if err != nil {
				return
			}
			_, _ = console.Write([]byte{c})
			line.WriteByte(c)
			if c == '\n' {
				s := line.String()
				line.Reset()
				if strings.Contains(s, "Linux version") {
					once.Do(func() { close(banner) })
				}
				if strings.HasPrefix(s, "vmtest-runner:") {
					b.Logf("vm: %s", strings.TrimSpace(s))
				}
			}
		}
	}()
	if err := cmd.Start(); err != nil {
		pw.Close()
		wg.Wait()
		return fmt.Errorf("vmtest: starting qemu: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()

	if probe {
		select {
		case <-banner:
		case <-time.After(bannerTimeout):
			_ = cmd.Process.Kill()
			<-done
			wg.Wait()
			return errNoBanner
		case err := <-done:
			wg.Wait()
			b.Logf("qemu (%s) exited before the kernel started: %v", accel, err)
			return errNoBanner
		}
	}
	err = <-done
	wg.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("vmtest: the VM did not power off within %s (killed)", b.Timeout)
	}
	if err != nil {
		return fmt.Errorf("vmtest: qemu (%s): %w", accel, err)
	}
	return nil
}
