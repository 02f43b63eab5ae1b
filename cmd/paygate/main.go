// Command paygate runs paygate: its servers, its development setup and its client.
//
// Each subcommand lives in its own file of this package and registers a constructor in an init
// function (see register); main only parses flags and dispatches. Every flag can also be set from
// the environment: PAYGATE_ followed by the flag name in upper case with dashes turned into
// underscores (--txn-timeout and PAYGATE_TXN_TIMEOUT). Flags on the command line win.
//
// Exit codes: 0 on success (and for --help), 2 for usage errors, 1 for failures, 3 for a
// payment that was refused (see docs/CLIENT.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/paygate/paygate/client"
	"github.com/paygate/paygate/internal/logging"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// envPrefix is the prefix of the environment variables that stand in for flags.
const envPrefix = "PAYGATE"

// defaultGCPercent is the garbage collector's target when GOGC is not set. paygate's processes
// keep a small live heap (10 to 20 MB) and allocate quickly while serving, so at Go's default
// of 100 they collect very often; 400 buys about 10% more payments per second on two cores (see
// docs/PERFORMANCE.md) for 10 to 20 MB more memory per process. GOGC in the environment wins.
const defaultGCPercent = 400

// configureGC applies defaultGCPercent unless GOGC is set, and returns the percent in effect.
func configureGC(getenv func(string) string) int {
	if getenv("GOGC") != "" {
		prev := debug.SetGCPercent(-1) // read the setting: set, then put it back
		debug.SetGCPercent(prev)
		return prev
	}
	debug.SetGCPercent(defaultGCPercent)
	return defaultGCPercent
}

func main() {
	configureGC(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := startProfile()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	stop()
	os.Exit(code)
}

// env is what a subcommand may use of its process. Tests run commands with buffers.
type env struct {
	stdout io.Writer
	stderr io.Writer
}

// commands holds the constructors of the subcommands, added by register from each subcommand's
// file. Constructors build a fresh command (and flag set) per run, so tests can run commands in
// parallel.
var commands []func(e *env) *ffcli.Command

// register adds a subcommand. Call it from an init function in the subcommand's file:
//
//	func init() { register(newBankCommand) }
func register(newCommand func(e *env) *ffcli.Command) {
	commands = append(commands, newCommand)
}

// ffOptions are the ff options of every command: flags first, then PAYGATE_* variables.
func ffOptions() []ff.Option {
	return []ff.Option{ff.WithEnvVarPrefix(envPrefix)}
}

// newFlagSet returns a flag set for a subcommand that reports errors instead of exiting.
func newFlagSet(e *env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("paygate "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

// usageError is a mistake in the command line: run prints it with the command's usage and exits
// with code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// run parses args, runs the selected command and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr}
	root := newRoot(e)

	if err := root.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK // the flag set printed the usage
		}
		// The flag package prints command-line errors with the usage; ff's other errors
		// (a bad PAYGATE_* value) are not printed yet.
		if !strings.HasPrefix(err.Error(), "error parsing commandline arguments") {
			fmt.Fprintf(stderr, "paygate: %v\n", err)
		}
		return exitUsage
	}
	flushTracing, err := clientTracing(ctx, selectedName(root, args))
	if err != nil {
		fmt.Fprintf(stderr, "paygate: %v\n", err)
		return exitUsage
	}
	err = root.Run(ctx)
	_ = flushTracing() // a failed export is reported by otel's error handler
	var ue *usageError
	var coded interface{ ExitCode() int } // e.g. 3 for a refused payment (client_config.go)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitUsage // ffcli printed the usage
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "paygate: %s\n", ue.msg)
		fmt.Fprintf(stderr, "Run 'paygate %s --help' for usage.\n", selectedName(root, args))
		return exitUsage
	case errors.As(err, &coded):
		if err.Error() != "" {
			printError(stderr, err)
		}
		return coded.ExitCode()
	}
	printError(stderr, err)
	return exitFailure
}

// printError prints a command's failure: "paygate: " and err, then, when err is a server's
// answer, a line "request id: ID" with the id the server logged the call with, to quote when
// reporting the failure.
func printError(w io.Writer, err error) {
	fmt.Fprintf(w, "paygate: %v\n", err)
	if id := client.RequestID(err); id != "" {
		fmt.Fprintf(w, "request id: %s\n", id)
	}
}

func newRoot(e *env) *ffcli.Command {
	var subs []*ffcli.Command
	for _, newCommand := range commands {
		c := newCommand(e)
		if c.FlagSet == nil {
			c.FlagSet = newFlagSet(e, c.Name)
		}
		subs = append(subs, c)
	}
	slices.SortFunc(subs, func(a, b *ffcli.Command) int { return strings.Compare(a.Name, b.Name) })

	fs := flag.NewFlagSet("paygate", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return &ffcli.Command{
		Name:       "paygate",
		ShortUsage: "paygate <subcommand> [flags]",
		ShortHelp:  "a payment gateway moving money between banks, atomically and exactly once",
		LongHelp: "Run 'paygate <subcommand> --help' for a subcommand's flags. Every flag can also be\n" +
			"set from the environment: PAYGATE_ followed by the flag name in upper case with\n" +
			"dashes as underscores (--txn-timeout and PAYGATE_TXN_TIMEOUT). Flags win.",
		FlagSet:     fs,
		Options:     ffOptions(),
		Subcommands: subs,
		Exec: func(_ context.Context, args []string) error {
			if len(args) > 0 {
				fmt.Fprintf(e.stderr, "paygate: unknown subcommand %q\n\n", args[0])
			}
			return flag.ErrHelp
		},
	}
}

// selectedName returns the subcommand named in args, for hints.
func selectedName(root *ffcli.Command, args []string) string {
	for _, a := range args {
		for _, c := range root.Subcommands {
			if a == c.Name {
				return c.Name
			}
		}
	}
	return ""
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// logFlags are the logging flags of long-running subcommands. Register them on the
// subcommand's flag set and build the logger in Exec:
//
//	var lf logFlags
//	lf.register(fs)
//	...
//	log, err := lf.logger(e.stderr)
type logFlags struct {
	format string
	level  string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.format, "log-format", logging.FormatText, "log format: text (for people) or json (for machines)")
	fs.StringVar(&l.level, "log-level", "info", "lowest level logged: debug, info, warn or error")
}

// logger builds the logger the flags describe; bad values are usage errors.
func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	level, err := logging.ParseLevel(l.level)
	if err != nil {
		return nil, usageErrorf("--log-level: %v", err)
	}
	log, err := logging.New(w, l.format, level)
	if err != nil {
		return nil, usageErrorf("--log-format: %v", err)
	}
	return log, nil
}
