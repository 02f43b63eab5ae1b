package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Reading passwords. A password is never an argument of its own: it comes from the
// environment (or the flag that stands for it, as login's --password), from stdin one a line,
// or from a prompt that does not echo what is typed.

// minPasswordLen is the gateway's shortest password (ChangePassword, CreateUser,
// ResetPassword, bootstrap).
const minPasswordLen = 10

// secretReader reads the passwords of one command from stdin: lines when stdin is not a
// terminal (or with --password-stdin), prompts without echo on a terminal.
type secretReader struct {
	e     *env
	in    *os.File
	lines *bufio.Reader
	// fromStdin makes every read a line of stdin, terminal or not (--password-stdin).
	fromStdin bool
}

func newSecretReader(e *env, fromStdin bool) *secretReader {
	return &secretReader{e: e, in: os.Stdin, fromStdin: fromStdin}
}

// prompting reports whether reads prompt at a terminal.
func (s *secretReader) prompting() bool {
	if s.fromStdin {
		return false
	}
	fi, err := s.in.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// line returns the next line of stdin without its line ending.
func (s *secretReader) line() (string, error) {
	if s.lines == nil {
		s.lines = bufio.NewReader(s.in)
	}
	line, err := s.lines.ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if line == "" && err != nil {
		if errors.Is(err, io.EOF) {
			return "", io.EOF
		}
		return "", err
	}
	return line, nil
}

// read returns one secret: a prompt at a terminal (label, without echo), else a line of
// stdin. missing says what to give instead when there is none.
func (s *secretReader) read(ctx context.Context, label, missing string) (string, error) {
	var v string
	var err error
	if s.prompting() {
		fmt.Fprint(s.e.stderr, label+": ")
		v, err = readNoEcho(ctx, s.in)
		fmt.Fprintln(s.e.stderr)
	} else {
		v, err = s.line()
	}
	if errors.Is(err, io.EOF) || (err == nil && v == "") {
		return "", usageErrorf("no %s: %s", strings.ToLower(label), missing)
	}
	return v, err
}

// newPassword returns a new password: at a terminal typed twice, else one line of stdin. It
// must have at least minPasswordLen characters.
func (s *secretReader) newPassword(ctx context.Context, label, missing string) (string, error) {
	pw, err := s.read(ctx, label, missing)
	if err != nil {
		return "", err
	}
	if err := checkNewPassword(pw); err != nil {
		return "", err
	}
	if s.prompting() {
		again, err := s.read(ctx, "Repeat "+strings.ToLower(label[:1])+label[1:], missing)
		if err != nil {
			return "", err
		}
		if again != pw {
			return "", usageErrorf("the two %ss differ", strings.ToLower(label))
		}
	}
	return pw, nil
}

// checkNewPassword refuses a new password the gateway would refuse.
func checkNewPassword(pw string) error {
	if n := len([]rune(pw)); n < minPasswordLen {
		return usageErrorf("the new password has %d characters: at least %d", n, minPasswordLen)
	}
	if len(pw) > 256 {
		return usageErrorf("the new password is longer than 256 bytes")
	}
	return nil
}

// generatePassword returns a random password (26 characters of base32, 130 bits), for
// --generate-password and paygate dev.
func generatePassword() string { return rand.Text() }
