//go:build !linux

package e2e

import "os/exec"

// setParentDeathSignal has no portable equivalent outside Linux; Cleanup still stops
// the children when the test ends normally.
func setParentDeathSignal(*exec.Cmd) {}
