// Package pgtest gives tests a fresh PostgreSQL database each, on the server named by
// PAYGATE_TEST_DATABASE_URL (or a local server with trust authentication), and skips them when
// no server can be reached.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultURL is the server the tests use when PAYGATE_TEST_DATABASE_URL is not set.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// URL is the server the tests create their databases on: PAYGATE_TEST_DATABASE_URL, or
// DefaultURL. Its role must be allowed to create and drop databases.
func URL() string {
	if u := os.Getenv("PAYGATE_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

var (
	reachOnce sync.Once
	reachErr  error
)

// Reachable returns nil when the server at URL accepts a connection, else why not. It asks
// once per test binary.
func Reachable() error {
	reachOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, URL())
		if err == nil {
			conn.Close(ctx)
		}
		reachErr = err
	})
	return reachErr
}

// NewDatabase creates a fresh database on the server at URL, named prefix followed by random
// hex digits, drops it (WITH (FORCE), closing what is still connected to it) when the test and
// its subtests end, and returns its URL (URL with the database name replaced). It skips the test
// when the server cannot be reached. prefix must be a lower-case SQL identifier
// ("paygate_test_" when empty).
func NewDatabase(t testing.TB, prefix string) string {
	t.Helper()
	admin := URL()
	if err := Reachable(); err != nil {
		t.Skipf("PostgreSQL not reachable at %s (set PAYGATE_TEST_DATABASE_URL to a server whose role may create databases): %v", admin, err)
	}
	if prefix == "" {
		prefix = "paygate_test_"
	}
	if !strings.HasSuffix(prefix, "_") {
		prefix += "_"
	}
	var b [8]byte
	rand.Read(b[:])
	name := prefix + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("connect to %s: %v", admin, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return DatabaseURL(t, admin, name)
}

// DatabaseURL returns server (a postgres:// URL) with its database replaced by name.
func DatabaseURL(t testing.TB, server, name string) string {
	t.Helper()
	u, err := url.Parse(server)
	if err != nil {
		t.Fatalf("PostgreSQL test URL %q: %v", server, err)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}
