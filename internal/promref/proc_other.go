//go:build !linux

package promref

import "os/exec"

// setParentDeathSignal has no portable equivalent outside Linux; Cleanup still stops
// the child when the test ends normally.
func setParentDeathSignal(*exec.Cmd) {}
