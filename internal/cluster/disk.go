package cluster

import "github.com/paygate/paygate/internal/launch"

// Disk is a small file system (tmpfs) mounted at a process's data directory, so that a test can
// make that process's disk full (Fill) and free it again (Free) while the process runs.
// Options.DataDisks asks the cluster for one; Cluster.Disk returns it.
type Disk = launch.Disk

// TmpfsAvailable reports why a tmpfs cannot be mounted here (not root, no CAP_SYS_ADMIN, a
// container without mount rights), or nil when it can. Tests of a full disk skip with its
// message.
func TmpfsAvailable() error { return launch.TmpfsAvailable() }

// Disk returns the tmpfs mounted at process name's data directory (Options.DataDisks), or nil.
// The disks are unmounted when the test ends, after the processes are stopped; when the test
// failed, their stores are first copied to <data directory>.kept.
func (c *Cluster) Disk(name string) *Disk { return c.sys.Disk(name) }
