// Package logging builds blockflow's zerolog logger: JSON, one event per line, or a
// console format when stderr is a terminal. Field names used across the tree are constants
// here so every component logs a block the same way.
package logging

import (
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// Common field names.
const (
	FieldBlock     = "block"
	FieldStage     = "stage"
	FieldSite      = "site"
	FieldComponent = "component"
	// FieldRole is the process's role (the blockflow subcommand); packages add component.
	FieldRole = "role"
)

// New returns a logger at level ("debug", "info", "warn", "error") writing to w; format is
// "json", "console" or "auto" (console on a terminal).
func New(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Nop(), err
	}
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			format = "console"
		}
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}
