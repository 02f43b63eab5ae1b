// Package logging builds the slog loggers of paygate's commands.
//
// People at a terminal get tint's compact coloured text; machines get JSON. Loggers are built
// once in main and passed down; nothing in paygate logs through a global logger. Values that must
// never reach a log (passwords, tokens) are wrapped in Secret, which redacts itself.
package logging

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"
)

// Formats accepted by New.
const (
	FormatText = "text"
	FormatJSON = "json"
)

// TimeFormat is the time layout of the text format.
const TimeFormat = "15:04:05.000"

// ErrFormat reports an unknown log format.
var ErrFormat = errors.New("logging: unknown format")

// New returns a logger writing to w at level and above. format is "text" (tint, with colours
// only when w is a terminal) or "json" (slog's JSON handler).
func New(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	switch strings.ToLower(format) {
	case FormatText, "":
		return slog.New(tint.NewTextHandler(w, &tint.Options{
			Level:      level,
			TimeFormat: TimeFormat,
			NoColor:    !IsTerminal(w),
		})), nil
	case FormatJSON:
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})), nil
	}
	return nil, fmt.Errorf("%w %q (want %q or %q)", ErrFormat, format, FormatText, FormatJSON)
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fd := f.Fd()
	return isatty.IsTerminal(fd) || isatty.IsCygwinTerminal(fd)
}

// ParseLevel reads a level name: "debug", "info", "warn" or "error" (any case), optionally
// with an offset as in "info+2" (see slog.Level.UnmarshalText).
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.TrimSpace(s))); err != nil {
		return 0, fmt.Errorf("logging: level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// Secret is a string that never appears in logs: it logs as "[REDACTED]".
type Secret string

// Redacted is what a Secret logs as.
const Redacted = "[REDACTED]"

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// String returns "[REDACTED]" too, so fmt does not leak the value either; use string(s) for the
// value itself.
func (Secret) String() string { return Redacted }
