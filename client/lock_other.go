//go:build !unix

package client

import "os"

// tryLock always succeeds where advisory file locks are not available: run one sending
// process per state directory there. Sending twice is still safe (payments are idempotent by
// id); only the per-account order could suffer.
func tryLock(*os.File) (bool, error) { return true, nil }

func unlock(*os.File) error { return nil }
