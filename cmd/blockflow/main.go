// Command blockflow is one binary with a subcommand per role. This package only parses
// flags and wires packages together; the work lives in producers/, workers/ and queryd/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// usageError is bad input on the command line or in a config file: exit code 2, one line.
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() map[string]command {
	return map[string]command{
		"dev":      {"all-in-one: embedded NATS, filesystem bucket, sidecar, workers, queryd", runDev},
		"sidecar":  {"ship a Prometheus TSDB directory's new blocks", runSidecar},
		"backfill": {"ship a directory of historical blocks", runBackfill},
		"worker":   {"run a worker pool stage: upload", runWorker},
		"queryd":   {"serve PromQL over the bucket's blocks", runQueryd},
		"bucket":   {"the bucket: ls (one line per block), import (catalogue an existing Thanos bucket)", runBucket},
		"replay":   {"rewind a stage to an earlier event", runReplay},
		"dlq":      {"inspect dead-lettered events: ls", runDLQ},
		"nats":     {"run a standalone JetStream server (dev and tests)", runNATS},
		"version":  {"print the version", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "blockflow: unknown command %q (run blockflow --help)\n", args[0])
		return 2
	}
	err := cmd.run(ctx, args[1:], stdout, stderr)
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case isUsage(err):
		fmt.Fprintf(stderr, "blockflow %s: %s\n", args[0], oneLine(err.Error()))
		return 2
	default:
		fmt.Fprintf(stderr, "blockflow %s: %s\n", args[0], oneLine(err.Error()))
		return 1
	}
}

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func printUsage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "usage: blockflow <command> [flags]")
	fmt.Fprintln(w)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun blockflow <command> --help for its flags.")
}
