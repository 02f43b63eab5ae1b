package launch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// Disk is a small file system (tmpfs) mounted at a process's data directory, so that a test can
// make that process's disk full (Fill) and free it again (Free) while the process runs.
// Options.DataDisks asks the system for one; System.Disk returns it.
type Disk struct {
	// Dir is the mount point: the process's data directory.
	Dir string
	// Size is the file system's size in bytes.
	Size int64

	mu sync.Mutex
}

// fillerName is the file Fill writes in the disk's directory.
const fillerName = "disk-full.filler"

// TmpfsAvailable reports why a tmpfs cannot be mounted here (not root, no CAP_SYS_ADMIN, a
// container without mount rights), or nil when it can. Tests of a full disk skip with its
// message.
func TmpfsAvailable() error {
	dir, err := os.MkdirTemp("", "paygate-tmpfs-probe-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		return fmt.Errorf("cannot mount a tmpfs (mount -t tmpfs needs root or CAP_SYS_ADMIN): %w", err)
	}
	return unmount(dir)
}

// mountDisk mounts a tmpfs of size bytes at dir, creating dir (mode 0700) if needed.
func mountDisk(dir string, size int64) (*Disk, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV,
		fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		return nil, fmt.Errorf("launch: mount a %d-byte tmpfs at %s: %w", size, dir, err)
	}
	return &Disk{Dir: dir, Size: size}, nil
}

// unmount unmounts dir, lazily (MNT_DETACH) if it is busy.
func unmount(dir string) error {
	err := syscall.Unmount(dir, 0)
	if errors.Is(err, syscall.EBUSY) {
		err = syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	if err != nil {
		return fmt.Errorf("launch: unmount %s: %w", dir, err)
	}
	return nil
}

// Fill writes a filler file until the file system has no free block left: from then on, a
// write that needs a new block fails with ENOSPC (SQLite: "database or disk is full").
func (d *Disk) Fill() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(d.Dir, fillerName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return nil // already full: not even an inode left
		}
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<16)
	for _, chunk := range []int{1 << 16, 4096, 512, 1} {
		for {
			if _, err := f.Write(buf[:chunk]); err != nil {
				if errors.Is(err, syscall.ENOSPC) {
					break
				}
				return fmt.Errorf("launch: fill %s: %w", d.Dir, err)
			}
		}
	}
	return nil
}

// Free removes the filler: the file system has room again.
func (d *Disk) Free() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := os.Remove(filepath.Join(d.Dir, fillerName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Avail returns the free space left on the disk, in bytes.
func (d *Disk) Avail() (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.Dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// copyTo copies the disk's files, but the filler, to dir.
func (d *Disk) copyTo(dir string) error {
	entries, err := os.ReadDir(d.Dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() == fillerName || !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(d.Dir, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}
