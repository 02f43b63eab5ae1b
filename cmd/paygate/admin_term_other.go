//go:build !linux

package main

import (
	"context"
	"errors"
	"os"
)

// readNoEcho cannot turn a terminal's echo off on this system: passwords come from stdin
// lines or the environment instead.
func readNoEcho(context.Context, *os.File) (string, error) {
	return "", errors.New("cannot read a password without echo on this system: pipe it to stdin (--password-stdin) or set it in the environment")
}
