package metrics

import "github.com/prometheus/client_golang/prometheus"

// BatchBuckets are the buckets of the batch size histograms, in messages or updates: powers of
// two from 1 (a call or a transaction alone) to 512 (the store's largest group commit).
var BatchBuckets = prometheus.ExponentialBuckets(1, 2, 10)

// StoreCommitMetrics registers paygate_store_commit_batch_size{store} and
// paygate_store_commit_seconds{store} in reg and returns store's two histograms, to hand to the
// store's commit hook (sqlitedb.CommitMetrics, pgdb.CommitMetrics). store is "gateway" or
// "bank": one store per process.
func StoreCommitMetrics(reg prometheus.Registerer, store string) (updates, seconds prometheus.Observer) {
	size := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "store", Name: "commit_batch_size",
		Help:    "Updates per committed write transaction of the store: SQLite's group commit takes several together; on PostgreSQL, which has no group commit, always 1.",
		Buckets: BatchBuckets,
	}, []string{"store"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "store", Name: "commit_seconds",
		Help:    "Time of each write transaction's commit (SQLite: the sync of the group commit; PostgreSQL: the COMMIT round trip, which waits for the server's WAL flush).",
		Buckets: DefBuckets,
	}, []string{"store"})
	reg.MustRegister(size, latency)
	return size.WithLabelValues(store), latency.WithLabelValues(store)
}
