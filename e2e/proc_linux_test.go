package e2e

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal kills the child if the test binary dies first (a test timeout, a
// crash), so no process outlives its test on a shared machine.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
