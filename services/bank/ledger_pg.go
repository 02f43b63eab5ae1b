package bank

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/paygate/paygate/internal/crashpoint"
	"github.com/paygate/paygate/internal/money"
	"github.com/paygate/paygate/internal/pgdb"
)

// pgMigrations is the PostgreSQL ledger's schema: files named <version>_<name>.sql, applied once
// each, in version order, at open (pgdb.Migrate; the database's schema_migrations records them).
//
//go:embed pgmigrations/*.sql
var pgMigrations embed.FS

// pgMigrationLockKey is the pg_advisory_lock key held while the ledger's migrations run, so that
// processes opening one database at the same time apply each migration once.
const pgMigrationLockKey int64 = 0x7061796761746501 // "paygate" and 01, the bank ledger

// PGLedger is a bank's ledger on PostgreSQL, with the semantics of Ledger (see its methods'
// documentation, which PGLedger's methods share). Every method that changes money is one
// PostgreSQL transaction at READ COMMITTED: the transaction's row is written or locked first,
// then the accounts it touches are locked with SELECT ... FOR UPDATE in id order and changed by
// relative updates, so concurrent writers never overdraw an account and do not deadlock each
// other (a batch may, and is then retried). CHECK constraints refuse anything else. A transaction
// aborted by PostgreSQL for a serialization failure or a deadlock (SQLSTATE 40001, 40P01) is run
// again from the start, with backoff. It is safe for concurrent use.
//
// One database (or one search_path) holds the ledger of one bank: the database remembers its
// bank, and opening it for another fails with ErrWrongBank. PostgreSQL text cannot hold NUL
// bytes, so identifiers containing one are refused (ErrInvalidArgument) or not found.
type PGLedger struct {
	pool    *pgxpool.Pool
	bank    string
	commits atomic.Pointer[pgdb.CommitMetrics] // observes write's commits; nil: none (observeCommits)
}

var _ ledgerStore = (*PGLedger)(nil)

// OpenPGLedger connects to the PostgreSQL database at url (a postgres:// URL or a key=value
// connection string, as pgxpool.ParseConfig reads it), applies the ledger's migrations under an
// advisory lock, and opens the ledger of bank bankName in it.
func OpenPGLedger(ctx context.Context, url, bankName string) (*PGLedger, error) {
	if bankName == "" {
		return nil, fmt.Errorf("open ledger: %w: empty bank name", ErrInvalidArgument)
	}
	pool, err := pgdb.Open(ctx, url, pgMigrations, "pgmigrations", pgMigrationLockKey)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	l := &PGLedger{pool: pool, bank: bankName}
	err = l.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO meta (key, value) VALUES ('bank', $1) ON CONFLICT (key) DO NOTHING`, bankName); err != nil {
			return err
		}
		var owner string
		if err := tx.QueryRow(ctx, `SELECT value FROM meta WHERE key = 'bank'`).Scan(&owner); err != nil {
			return err
		}
		if owner != bankName {
			return fmt.Errorf("%w: the database is the ledger of %q, not %q", ErrWrongBank, owner, bankName)
		}
		return nil
	})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	return l, nil
}

// Close closes the ledger's connections.
func (l *PGLedger) Close() error {
	l.pool.Close()
	return nil
}

// Bank returns the name of the bank the ledger belongs to.
func (l *PGLedger) Bank() string { return l.bank }

// write runs fn in a transaction and commits it; an error undoes all of fn. A serialization
// failure or a deadlock runs fn again in a new transaction, after a backoff: fn must set its
// results afresh on every run (pgdb.Write).
func (l *PGLedger) write(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) error) error {
	return pgdb.WriteObserved(ctx, l.pool, l.commits.Load(), fn)
}

// pgUnavailable says whether err means the database cannot be reached or is out of resources
// for now (pgdb.Unavailable).
func pgUnavailable(err error) bool { return pgdb.Unavailable(err) }

// hasNUL reports whether any of ss holds a NUL byte, which PostgreSQL text cannot store.
func hasNUL(ss ...string) bool { return pgdb.HasNUL(ss...) }

// pgQuerier is what reads need: a pgx.Tx or the pool.
type pgQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// CountAccounts returns the number of accounts in the ledger.
func (l *PGLedger) CountAccounts(ctx context.Context) (int, error) {
	var n int
	if err := l.pool.QueryRow(ctx, `SELECT count(*) FROM accounts`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count accounts: %w", err)
	}
	return n, nil
}

// ImportAccounts inserts the opening accounts and records their initial total in one
// transaction, as Ledger.ImportAccounts.
func (l *PGLedger) ImportAccounts(ctx context.Context, accounts []Account) error {
	for _, a := range accounts {
		if err := checkAccountID(a.ID, l.bank); err != nil {
			return fmt.Errorf("import accounts: %w: %w", ErrInvalidArgument, err)
		}
		if !money.Known(a.Currency) || a.Balance < 0 || a.Held != 0 || a.PendingCredit != 0 || hasNUL(a.ID, a.Holder) {
			return fmt.Errorf("import accounts: %w: account %q: want a known currency, a balance >= 0 and no holds", ErrInvalidArgument, a.ID)
		}
	}
	initial, err := sumBalances(accounts)
	if err != nil {
		return fmt.Errorf("import accounts: %w", err)
	}
	err = l.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		// Two importers at once: the second waits here and then finds the accounts. An
		// OpenAccount waits too, or comes first and the import finds its account.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, pgOpenAccountLockKey); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `LOCK TABLE accounts IN EXCLUSIVE MODE`); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM accounts`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return ErrLedgerNotEmpty
		}
		if _, err := tx.Exec(ctx, `INSERT INTO meta (key, value) VALUES ('initial', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
			strconv.FormatInt(initial, 10)); err != nil {
			return err
		}
		rows := make([][]any, len(accounts))
		for i, a := range accounts {
			rows[i] = []any{a.ID, a.Holder, a.Currency, a.Balance, a.Closed}
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"accounts"}, []string{"id", "holder", "currency", "balance", "closed"}, pgx.CopyFromRows(rows))
		return err
	})
	if err != nil {
		return fmt.Errorf("import accounts: %w", err)
	}
	return nil
}

// Prepare is Ledger.Prepare.
func (l *PGLedger) Prepare(ctx context.Context, txnID string, legs []Leg, deadline, now time.Time) (Vote, error) {
	return l.PrepareItem(ctx, PrepareItem{TxnID: txnID, Legs: legs, Deadline: deadline}, now)
}

// PrepareItem is Ledger.PrepareItem.
func (l *PGLedger) PrepareItem(ctx context.Context, it PrepareItem, now time.Time) (Vote, error) {
	r := l.newPrepareRun([]PrepareItem{it}, now)
	if r.errs[0] != nil {
		return Vote{}, r.errs[0]
	}
	if err := l.write(ctx, func(ctx context.Context, tx pgx.Tx) error { return l.applyPrepares(ctx, tx, r) }); err != nil {
		return Vote{}, err
	}
	r.finish()
	return r.votes[0], nil
}

// newPrepareRun checks the items as Ledger's does, and also refuses text PostgreSQL cannot store.
func (l *PGLedger) newPrepareRun(items []PrepareItem, now time.Time) *prepareRun {
	r := &prepareRun{items: items, now: now, errs: make([]error, len(items)),
		votes: make([]Vote, len(items)), recorded: make([]bool, len(items))}
	for i, it := range items {
		err := checkLegs(it.TxnID, it.Legs, it.Deadline)
		if err == nil && hasNUL(it.TxnID) {
			err = fmt.Errorf("%w: transaction id holds a NUL byte", ErrInvalidArgument)
		}
		for _, g := range it.Legs {
			if err == nil && hasNUL(g.Account, g.Currency) {
				err = fmt.Errorf("%w: leg account id or currency holds a NUL byte", ErrInvalidArgument)
			}
		}
		if err != nil {
			r.errs[i] = fmt.Errorf("prepare %s: %w", it.TxnID, err)
			continue
		}
		r.valid++
	}
	return r
}

// applyPrepares is prepareRun.apply on PostgreSQL: it prepares r's valid items in tx, in order,
// and sets their results.
func (l *PGLedger) applyPrepares(ctx context.Context, tx pgx.Tx, r *prepareRun) error {
	for i, it := range r.items {
		if r.errs[i] != nil {
			continue
		}
		v, rec, err := l.prepareTx(ctx, tx, it, r.now)
		if err != nil {
			return fmt.Errorf("prepare %s: %w", it.TxnID, err)
		}
		r.votes[i], r.recorded[i] = v, rec
		if rec {
			crashpoint.Hit(crashpoint.BankPrepareBeforePersist)
		}
	}
	return nil
}

// prepareTx does Prepare's work inside tx, as Ledger.prepareTx; recorded says whether it wrote
// anything.
func (l *PGLedger) prepareTx(ctx context.Context, tx pgx.Tx, it PrepareItem, now time.Time) (Vote, bool, error) {
	txnID, legs, deadline := it.TxnID, it.Legs, it.Deadline
	state, first := Prepared, Vote{Yes: true}
	if now.After(deadline) {
		state, first = Aborted, Vote{Reason: ReasonDeadlineExceeded, Message: fmt.Sprintf(
			"transaction %s arrived at %s, after its deadline %s", txnID, now.UTC().Format(time.RFC3339Nano), deadline.UTC().Format(time.RFC3339Nano))}
	}
	legsJSON, err := encodeLegs(legs)
	if err != nil {
		return Vote{}, false, fmt.Errorf("record transaction: %w", err)
	}
	proof := it.DecisionProof
	if proof == nil {
		proof = []byte{}
	}
	// Recording the transaction first takes its row: a concurrent prepare or abort of the same
	// id waits for this transaction and then finds the record.
	tag, err := tx.Exec(ctx, `INSERT INTO transactions (id, state, reason, message, deadline, created_at, updated_at, legs, decision_proof)
		VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8) ON CONFLICT (id) DO NOTHING`,
		txnID, string(state), string(first.Reason), first.Message, deadline.UnixNano(), now.UnixNano(), legsJSON, proof)
	if err != nil {
		return Vote{}, false, fmt.Errorf("record transaction: %w", err)
	}
	if tag.RowsAffected() != 1 {
		known, err := pgLoadTransaction(ctx, tx, txnID, false)
		if err != nil {
			return Vote{}, false, err
		}
		return replayVote(known, legs), false, nil
	}
	if state == Aborted {
		return first, true, nil
	}
	no := func(v Vote) (Vote, bool, error) {
		if err := pgExecOne(ctx, tx, `UPDATE transactions SET state = 'ABORTED', reason = $1, message = $2 WHERE id = $3`, string(v.Reason), v.Message, txnID); err != nil {
			return Vote{}, false, fmt.Errorf("record vote: %w", err)
		}
		return v, true, nil
	}

	// Lock the accounts in id order, then check every leg against them as the earlier legs of
	// this transaction left them.
	ids := make([]string, 0, len(legs))
	for _, g := range legs {
		ids = append(ids, g.Account)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	locked, err := pgLockAccounts(ctx, tx, ids)
	if err != nil {
		return Vote{}, false, err
	}
	after := make(map[string]*Account, len(locked))
	for id, a := range locked {
		after[id] = &a
	}
	for _, g := range legs {
		a, ok := after[g.Account]
		if !ok {
			return no(Vote{Reason: ReasonUnknownAccount, Message: l.unknownAccountMessage(g.Account)})
		}
		if v := checkLeg(a, g); v.Reason != ReasonNone {
			return no(v)
		}
	}
	for _, id := range ids {
		held := after[id].Held - locked[id].Held
		pending := after[id].PendingCredit - locked[id].PendingCredit
		if err := pgExecOne(ctx, tx, `UPDATE accounts SET held = held + $1, pending_credit = pending_credit + $2 WHERE id = $3`, held, pending, id); err != nil {
			return Vote{}, false, fmt.Errorf("hold on %s: %w", id, err)
		}
	}
	return first, true, nil
}

// pgLockAccounts locks the accounts ids (sorted, distinct) FOR UPDATE, in that order, and returns
// those that exist.
func pgLockAccounts(ctx context.Context, tx pgx.Tx, ids []string) (map[string]Account, error) {
	rows, err := tx.Query(ctx, `SELECT `+accountColumns+` FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE`, ids)
	if err != nil {
		return nil, fmt.Errorf("lock accounts: %w", err)
	}
	defer rows.Close()
	out := make(map[string]Account, len(ids))
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			return nil, fmt.Errorf("lock accounts: %w", err)
		}
		out[a.ID] = a
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lock accounts: %w", err)
	}
	return out, nil
}

func (l *PGLedger) unknownAccountMessage(id string) string {
	return (&Ledger{bank: l.bank}).unknownAccountMessage(id)
}

func (l *PGLedger) accountError(action, id string, err error) error {
	return (&Ledger{bank: l.bank}).accountError(action, id, err)
}

// Commit is Ledger.Commit.
func (l *PGLedger) Commit(ctx context.Context, txnID string) error {
	return l.completeOne(ctx, Completion{TxnID: txnID, Outcome: Committed})
}

// Abort is Ledger.Abort.
func (l *PGLedger) Abort(ctx context.Context, txnID string) error {
	return l.completeOne(ctx, Completion{TxnID: txnID, Outcome: Aborted})
}

func (l *PGLedger) completeOne(ctx context.Context, c Completion) error {
	r := l.newCompleteRun([]Completion{c})
	if r.errs[0] != nil {
		return r.errs[0]
	}
	if err := l.write(ctx, func(ctx context.Context, tx pgx.Tx) error { return applyCompletionsPG(ctx, tx, r) }); err != nil {
		return err
	}
	r.finish()
	return r.errs[0]
}

// newCompleteRun is newCompleteRun; an id PostgreSQL cannot store is unknown to Commit and
// invalid to Abort (which would record it).
func (l *PGLedger) newCompleteRun(items []Completion) *completeRun {
	r := newCompleteRun(items)
	for i, c := range items {
		if r.errs[i] != nil || !hasNUL(c.TxnID) {
			continue
		}
		if c.Outcome == Aborted {
			r.errs[i] = fmt.Errorf("abort: %w: transaction id holds a NUL byte", ErrInvalidArgument)
		} else {
			r.errs[i] = fmt.Errorf("commit %q: %w", c.TxnID, ErrUnknownTransaction)
		}
		r.valid--
	}
	return r
}

// applyCompletionsPG is completeRun.apply on PostgreSQL.
func applyCompletionsPG(ctx context.Context, tx pgx.Tx, r *completeRun) error {
	for i, c := range r.items {
		if r.errs[i] != nil {
			continue
		}
		action, do := "commit", pgCommitTx
		if c.Outcome == Aborted {
			action, do = "abort", pgAbortTx
		}
		ok, refused, err := do(ctx, tx, c.TxnID)
		if err != nil {
			return fmt.Errorf("%s %s: %w", action, c.TxnID, err)
		}
		r.refusals[i] = nil // a retried transaction sets every result again
		if refused != nil {
			r.refusals[i] = fmt.Errorf("%s %s: %w", action, c.TxnID, refused)
		}
		r.applied[i] = ok
	}
	return nil
}

// legsByAccount returns legs sorted by account, the order accounts are locked in.
func legsByAccount(legs []Leg) []Leg {
	legs = slices.Clone(legs)
	slices.SortStableFunc(legs, func(a, b Leg) int { return strings.Compare(a.Account, b.Account) })
	return legs
}

// pgCommitTx does Commit's work inside tx, with commitTx's results.
func pgCommitTx(ctx context.Context, tx pgx.Tx, txnID string) (applied bool, refused, err error) {
	var legsJSON []byte
	err = tx.QueryRow(ctx, `UPDATE transactions SET state = 'COMMITTED', updated_at = $1 WHERE id = $2 AND state = 'PREPARED' RETURNING legs`,
		time.Now().UnixNano(), txnID).Scan(&legsJSON)
	if errors.Is(err, pgx.ErrNoRows) {
		t, err := pgLoadTransaction(ctx, tx, txnID, false)
		refused, err := notCommitted(txnID, t, err)
		return false, refused, err
	}
	if err != nil {
		return false, nil, fmt.Errorf("commit: %w", err)
	}
	legs, err := decodeLegs(legsJSON)
	if err != nil {
		return false, nil, fmt.Errorf("commit: %w", err)
	}
	crashpoint.Hit(crashpoint.BankCommitBeforePersist)
	for _, g := range legsByAccount(legs) {
		q := `UPDATE accounts SET balance = balance - $1, held = held - $1 WHERE id = $2`
		if g.Direction == Credit {
			q = `UPDATE accounts SET balance = balance + $1, pending_credit = pending_credit - $1 WHERE id = $2`
		}
		if err := pgExecOne(ctx, tx, q, g.Amount, g.Account); err != nil {
			return false, nil, fmt.Errorf("apply %s of %d to %s: %w", strings.ToLower(string(g.Direction)), g.Amount, g.Account, err)
		}
	}
	return true, nil, nil
}

// pgAbortTx does Abort's work inside tx, with abortTx's results. The transaction's row is locked
// before its state is looked at, so that a concurrent Commit cannot slip in between.
func pgAbortTx(ctx context.Context, tx pgx.Tx, txnID string) (applied bool, refused, err error) {
	t, err := pgLoadTransaction(ctx, tx, txnID, true)
	if errors.Is(err, ErrUnknownTransaction) {
		now := time.Now().UnixNano()
		tag, err := tx.Exec(ctx, `INSERT INTO transactions (id, state, created_at, updated_at, legs) VALUES ($1, 'ABORTED', $2, $2, '[]') ON CONFLICT (id) DO NOTHING`, txnID, now)
		if err != nil {
			return false, nil, fmt.Errorf("record transaction: %w", err)
		}
		if tag.RowsAffected() == 1 {
			return true, nil, nil
		}
		// A prepare recorded it meanwhile: abort that.
		if t, err = pgLoadTransaction(ctx, tx, txnID, true); err != nil {
			return false, nil, err
		}
	} else if err != nil {
		return false, nil, err
	}
	switch t.State {
	case Aborted:
		return false, nil, nil
	case Committed:
		return false, ErrAlreadyCommitted, nil
	}
	for _, g := range legsByAccount(t.Legs) {
		q := `UPDATE accounts SET held = held - $1 WHERE id = $2`
		if g.Direction == Credit {
			q = `UPDATE accounts SET pending_credit = pending_credit - $1 WHERE id = $2`
		}
		if err := pgExecOne(ctx, tx, q, g.Amount, g.Account); err != nil {
			return false, nil, fmt.Errorf("release %s of %d on %s: %w", strings.ToLower(string(g.Direction)), g.Amount, g.Account, err)
		}
	}
	if err := pgExecOne(ctx, tx, `UPDATE transactions SET state = 'ABORTED', updated_at = $1 WHERE id = $2`, time.Now().UnixNano(), txnID); err != nil {
		return false, nil, err
	}
	return true, nil, nil
}

// Batch is Ledger.Batch: completions, then prepares, in one PostgreSQL transaction.
func (l *PGLedger) Batch(ctx context.Context, completions []Completion, prepares []PrepareItem, now time.Time) (completeErrs []error, votes []Vote, prepareErrs []error, err error) {
	c, p := l.newCompleteRun(completions), l.newPrepareRun(prepares, now)
	if c.valid+p.valid > 0 {
		err = l.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
			if err := lockBatchAccounts(ctx, tx, c, p); err != nil {
				return err
			}
			if err := applyCompletionsPG(ctx, tx, c); err != nil {
				return err
			}
			return l.applyPrepares(ctx, tx, p)
		})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("batch of %d completions and %d prepares: %w", len(completions), len(prepares), err)
		}
	}
	c.finish()
	p.finish()
	return c.errs, p.votes, p.errs, nil
}

// lockBatchAccounts locks every account a batch touches, in id order, before any of its items
// runs. Each item locks its own accounts in id order too, but two batches running at once (two
// gateway replicas send them) would otherwise interleave their items' locks and deadlock each
// other, each deadlock costing PostgreSQL's deadlock_timeout (1 s by default) before the retry.
// Locked up front, batches that share an account simply run one after the other.
func lockBatchAccounts(ctx context.Context, tx pgx.Tx, c *completeRun, p *prepareRun) error {
	if len(p.items)+len(c.items) < 2 {
		return nil // one item locks its own accounts in order
	}
	seen := map[string]bool{}
	var ids []string
	add := func(legs []Leg) {
		for _, g := range legs {
			if !seen[g.Account] {
				seen[g.Account] = true
				ids = append(ids, g.Account)
			}
		}
	}
	for i, it := range p.items {
		if p.errs[i] == nil {
			add(it.Legs)
		}
	}
	var txns []string
	for i, it := range c.items {
		if c.errs[i] == nil {
			txns = append(txns, it.TxnID)
		}
	}
	if len(txns) > 0 {
		rows, err := tx.Query(ctx, `SELECT legs FROM transactions WHERE id = ANY($1)`, txns)
		if err != nil {
			return fmt.Errorf("read the legs of the batch's transactions: %w", err)
		}
		for rows.Next() {
			var raw []byte
			if err := rows.Scan(&raw); err != nil {
				rows.Close()
				return fmt.Errorf("read the legs of the batch's transactions: %w", err)
			}
			legs, err := decodeLegs(raw)
			if err != nil {
				rows.Close()
				return err
			}
			add(legs)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read the legs of the batch's transactions: %w", err)
		}
	}
	_, err := pgLockAccounts(ctx, tx, ids)
	return err
}

// pgExecOne runs an UPDATE that must change exactly one row.
func pgExecOne(ctx context.Context, tx pgx.Tx, query string, args ...any) error {
	tag, err := tx.Exec(ctx, query, args...)
	if err != nil {
		return err
	}
	if n := tag.RowsAffected(); n != 1 {
		return fmt.Errorf("%d rows changed, want 1", n)
	}
	return nil
}

// pgLoadTransaction reads a transaction's record; forUpdate also locks its row.
func pgLoadTransaction(ctx context.Context, q pgQuerier, txnID string, forUpdate bool) (Transaction, error) {
	query := `SELECT state, reason, message, deadline, created_at, updated_at, legs, decision_proof FROM transactions WHERE id = $1`
	if forUpdate {
		query += ` FOR UPDATE`
	}
	var (
		state, reason string
		dl            *int64
		created       int64
		updated       int64
		legsJSON      []byte
	)
	t := Transaction{ID: txnID}
	err := q.QueryRow(ctx, query, txnID).Scan(&state, &reason, &t.Message, &dl, &created, &updated, &legsJSON, &t.DecisionProof)
	if errors.Is(err, pgx.ErrNoRows) {
		return Transaction{}, ErrUnknownTransaction
	}
	if err != nil {
		return Transaction{}, fmt.Errorf("load transaction: %w", err)
	}
	t.State, t.Reason = State(state), Reason(reason)
	if dl != nil {
		t.Deadline = time.Unix(0, *dl).UTC()
	}
	t.CreatedAt, t.UpdatedAt = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	if t.Legs, err = decodeLegs(legsJSON); err != nil {
		return Transaction{}, fmt.Errorf("load transaction: %w", err)
	}
	return t, nil
}

func pgLoadAccount(ctx context.Context, q pgQuerier, id string) (Account, error) {
	if hasNUL(id) {
		return Account{}, ErrUnknownAccount
	}
	a, err := scanAccount(q.QueryRow(ctx, `SELECT `+accountColumns+` FROM accounts WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Account{}, ErrUnknownAccount
	}
	if err != nil {
		return Account{}, fmt.Errorf("load account %s: %w", id, err)
	}
	return a, nil
}

// readTx runs fn in a read-only REPEATABLE READ transaction: one snapshot.
func (l *PGLedger) readTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, l.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, fn)
}

// Account is Ledger.Account.
func (l *PGLedger) Account(ctx context.Context, id string) (Account, error) {
	a, err := pgLoadAccount(ctx, l.pool, id)
	if err != nil {
		return Account{}, l.accountError("get account", id, err)
	}
	return a, nil
}

// Balances is Ledger.Balances.
func (l *PGLedger) Balances(ctx context.Context, ids []string) ([]Account, error) {
	out := make([]Account, 0, len(ids))
	err := l.readTx(ctx, func(tx pgx.Tx) error {
		out = out[:0]
		for _, id := range ids {
			a, err := pgLoadAccount(ctx, tx, id)
			if err != nil {
				return l.accountError("balances", id, err)
			}
			out = append(out, a)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrUnknownAccount) {
			return nil, err
		}
		return nil, fmt.Errorf("balances: %w", err)
	}
	return out, nil
}

// ListAccounts is Ledger.ListAccounts; ids are ordered bytewise (COLLATE "C"), as in SQLite.
func (l *PGLedger) ListAccounts(ctx context.Context, pageSize int, pageToken string) ([]Account, string, error) {
	if pageSize <= 0 {
		return nil, "", fmt.Errorf("list accounts: %w: page size %d", ErrInvalidArgument, pageSize)
	}
	after, err := decodeAccountPageToken(pageToken)
	if err != nil {
		return nil, "", err
	}
	rows, err := l.pool.Query(ctx, `SELECT `+accountColumns+` FROM accounts WHERE id > $1 ORDER BY id LIMIT $2`, after, pageSize+1)
	if err != nil {
		return nil, "", fmt.Errorf("list accounts: %w", err)
	}
	defer rows.Close()
	return accountPage(rows, pageSize)
}

// Transaction is Ledger.Transaction.
func (l *PGLedger) Transaction(ctx context.Context, txnID string) (Transaction, error) {
	if hasNUL(txnID) {
		return Transaction{}, fmt.Errorf("get transaction %q: %w", txnID, ErrUnknownTransaction)
	}
	t, err := pgLoadTransaction(ctx, l.pool, txnID, false)
	if err != nil {
		return Transaction{}, fmt.Errorf("get transaction %s: %w", txnID, err)
	}
	return t, nil
}

// PreparedBefore is Ledger.PreparedBefore.
func (l *PGLedger) PreparedBefore(ctx context.Context, t time.Time) ([]Transaction, error) {
	var out []Transaction
	err := l.readTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT id FROM transactions WHERE state = 'PREPARED' AND deadline < $1 ORDER BY deadline, id`, t.UnixNano())
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		out = make([]Transaction, 0, len(ids))
		for _, id := range ids {
			t, err := pgLoadTransaction(ctx, tx, id, false)
			if err != nil {
				return fmt.Errorf("%s: %w", id, err)
			}
			out = append(out, t)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("prepared before: %w", err)
	}
	return out, nil
}
