package bank

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/paygate/paygate/internal/metrics"
	"github.com/paygate/paygate/internal/pgdb"
	"github.com/paygate/paygate/internal/sqlitedb"
)

// observeCommits registers paygate_store_commit_batch_size{store="bank"} and
// paygate_store_commit_seconds{store="bank"} in reg and has ledger observe its commits with
// them. A ledger of another kind (a test's) observes nothing.
func observeCommits(ledger LedgerStore, reg prometheus.Registerer) {
	updates, seconds := metrics.StoreCommitMetrics(reg, "bank")
	switch l := ledger.(type) {
	case *Ledger:
		l.db.SetCommitMetrics(&sqlitedb.CommitMetrics{Updates: updates, Seconds: seconds})
	case *PGLedger:
		l.commits.Store(&pgdb.CommitMetrics{Updates: updates, Seconds: seconds})
	}
}
