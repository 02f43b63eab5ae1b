package main

import (
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/paygate/paygate/internal/cluster"
)

// wantPerm checks the permission bits of path.
func wantPerm(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s has mode %v, want %v", path, got, want)
	}
}

// The fixtures copied by `paygate dev` hold the demo passwords: they are 0600 in a new 0700
// directory, and a users file left world-readable in a 0755 directory is tightened.
func TestDevCopyFixturesArePrivate(t *testing.T) {
	t.Parallel()
	src := fstest.MapFS{
		"user_details.json":           {Data: []byte(`{"alice": {"password": "alice-pass-123"}}`)},
		"bank1_server_accounts.json":  {Data: []byte(`[]`)},
		"unused_server_accounts.json": {Data: []byte(`[]`)},
	}
	files := []string{"user_details.json", "bank1_server_accounts.json"}

	t.Run("new directory", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "fixtures")
		if err := copyFixtures(src, dir, files); err != nil {
			t.Fatal(err)
		}
		wantPerm(t, dir, 0o700)
		for _, f := range files {
			wantPerm(t, filepath.Join(dir, f), 0o600)
		}
	})

	t.Run("existing 0755 directory and 0644 files", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "fixtures")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		edited := filepath.Join(dir, "user_details.json")
		if err := os.WriteFile(edited, []byte(`{"edited": {"password": "kept-as-is"}}`), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(edited, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := copyFixtures(src, dir, files); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			wantPerm(t, filepath.Join(dir, f), 0o600)
		}
		if data, _ := os.ReadFile(edited); string(data) != `{"edited": {"password": "kept-as-is"}}` {
			t.Errorf("an existing users file was overwritten: %s", data)
		}
	})

	t.Run("dev.json written over a 0644 one", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "dev.json")
		if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := writePrivate(path, []byte("{}\n")); err != nil {
			t.Fatal(err)
		}
		wantPerm(t, path, 0o600)
		if data, _ := os.ReadFile(path); string(data) != "{}\n" {
			t.Errorf("dev.json holds %q", data)
		}
	})
}

// TestDevFilesArePrivate runs `paygate dev` with umask 000 in a state directory whose
// subdirectories exist already with mode 0755: the users file, dev.json (both with the demo
// passwords) and every database file must still be readable by their owner only.
func TestDevFilesArePrivate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts paygate dev; skipped with -short")
	}
	t.Parallel()
	bin := cluster.Binary(t)
	work := t.TempDir()
	dir := filepath.Join(work, "state")
	for _, d := range []string{dir, filepath.Join(dir, "data"), filepath.Join(dir, "fixtures")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	api, web := cluster.FreePort(t), cluster.FreePort(t)
	d := startDevProcess(t, "/bin/sh", work, dir, nil,
		"-c", `umask 000 && exec "$0" "$@"`, bin, "dev", "--dir", dir, "--listen", api, "--web", web)

	wantPerm(t, filepath.Join(dir, "dev.json"), 0o600)
	fixtures, err := filepath.Glob(filepath.Join(dir, "fixtures", "*.json"))
	if err != nil || len(fixtures) != 4 {
		t.Fatalf("fixtures copied: %v, %v; want the users file and 3 accounts files", fixtures, err)
	}
	for _, f := range fixtures {
		wantPerm(t, f, 0o600)
	}
	// The stores are open: each has its -wal and -shm files beside it.
	dbs, err := filepath.Glob(filepath.Join(dir, "data", "*.db*"))
	if err != nil || len(dbs) < 4 {
		t.Fatalf("database files: %v, %v; want the gateway's and 3 banks'", dbs, err)
	}
	for _, f := range dbs {
		wantPerm(t, f, 0o600)
	}
	d.interrupt()
}
