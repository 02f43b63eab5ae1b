package logging_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/paygate/paygate/internal/logging"
)

func TestNewFormats(t *testing.T) {
	t.Parallel()
	tests := []struct {
		format string
		check  func(t *testing.T, out string)
	}{
		{format: "json", check: func(t *testing.T, out string) {
			var m map[string]any
			if err := json.Unmarshal([]byte(out), &m); err != nil {
				t.Fatalf("not JSON: %q: %v", out, err)
			}
			if m["msg"] != "hello" || m["bank"] != "bank1" || m["level"] != "INFO" {
				t.Errorf("record %v", m)
			}
		}},
		{format: "text", check: func(t *testing.T, out string) {
			if !strings.Contains(out, "hello") || !strings.Contains(out, "bank=bank1") {
				t.Errorf("text %q", out)
			}
			if strings.Contains(out, "\x1b[") {
				t.Errorf("colours written to a non-terminal: %q", out)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			log, err := logging.New(&buf, tt.format, slog.LevelInfo)
			if err != nil {
				t.Fatal(err)
			}
			log.Debug("hidden")
			log.Info("hello", "bank", "bank1")
			if strings.Contains(buf.String(), "hidden") {
				t.Errorf("debug line written at info level: %q", buf.String())
			}
			tt.check(t, strings.TrimSpace(buf.String()))
		})
	}
}

func TestNewRejectsUnknownFormat(t *testing.T) {
	t.Parallel()
	if _, err := logging.New(&bytes.Buffer{}, "xml", slog.LevelInfo); !errors.Is(err, logging.ErrFormat) {
		t.Fatalf("err = %v, want ErrFormat", err)
	}
}

func TestParseLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    slog.Level
		wantErr bool
	}{
		{in: "debug", want: slog.LevelDebug},
		{in: "INFO", want: slog.LevelInfo},
		{in: "warn", want: slog.LevelWarn},
		{in: " error ", want: slog.LevelError},
		{in: "info+2", want: slog.LevelInfo + 2},
		{in: "loud", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := logging.ParseLevel(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestSecretIsRedacted(t *testing.T) {
	t.Parallel()
	const password = "hunter2-correct-horse"
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		log, err := logging.New(&buf, format, slog.LevelDebug)
		if err != nil {
			t.Fatal(err)
		}
		s := logging.Secret(password)
		log.Info("login", "password", s, slog.Group("req", "token", s))
		out := buf.String()
		if strings.Contains(out, password) {
			t.Errorf("%s: secret leaked: %q", format, out)
		}
		if strings.Count(out, logging.Redacted) != 2 {
			t.Errorf("%s: want two %s in %q", format, logging.Redacted, out)
		}
	}
	if got := fmt.Sprintf("%v %s", logging.Secret(password), logging.Secret(password)); strings.Contains(got, password) {
		t.Errorf("fmt leaked the secret: %q", got)
	}
}
