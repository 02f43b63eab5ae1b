//go:build linux

package main

import (
	"context"
	"os"
	"strings"
	"syscall"
	"unsafe"
)

// readNoEcho reads a line from the terminal f with echo off, and puts the terminal back as it
// was, also when ctx ends first (Ctrl-C).
func readNoEcho(ctx context.Context, f *os.File) (string, error) {
	fd := f.Fd()
	var old syscall.Termios
	if err := ioctlTermios(fd, syscall.TCGETS, &old); err != nil {
		return "", err
	}
	quiet := old
	quiet.Lflag &^= syscall.ECHO
	quiet.Lflag |= syscall.ICANON | syscall.ISIG
	if err := ioctlTermios(fd, syscall.TCSETS, &quiet); err != nil {
		return "", err
	}
	defer ioctlTermios(fd, syscall.TCSETS, &old)
	type result struct {
		line string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// One byte at a time: nothing past the line is taken from the terminal.
		var b strings.Builder
		var c [1]byte
		for {
			n, err := f.Read(c[:])
			if err != nil || (n == 1 && c[0] == '\n') {
				done <- result{strings.TrimRight(b.String(), "\r"), err}
				return
			}
			b.Write(c[:n])
		}
	}()
	select {
	case r := <-done:
		if r.err != nil && r.line != "" {
			r.err = nil
		}
		return r.line, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func ioctlTermios(fd uintptr, req uintptr, t *syscall.Termios) error {
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(t))); e != 0 {
		return e
	}
	return nil
}
