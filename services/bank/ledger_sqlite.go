package bank

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/crashpoint"
	"github.com/paygate/paygate/internal/money"
	"github.com/paygate/paygate/internal/sqlitedb"
)

// The ledger in one SQLite file, the embedded default (see Ledger).

// migrations is the ledger's schema; entries are applied once, in order (sqlitedb.Open). Money
// is INTEGER minor units; times are INTEGER Unix nanoseconds (UTC). Never edit an entry: existing
// ledgers have run it; append a new one.
var migrations = []string{`
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
) STRICT;

CREATE TABLE accounts (
	id             TEXT PRIMARY KEY,
	holder         TEXT NOT NULL DEFAULT '',
	currency       TEXT NOT NULL CHECK (length(currency) = 3),
	balance        INTEGER NOT NULL CHECK (balance >= 0),
	held           INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0 AND held <= balance),
	pending_credit INTEGER NOT NULL DEFAULT 0 CHECK (pending_credit >= 0),
	closed         INTEGER NOT NULL DEFAULT 0 CHECK (closed IN (0, 1))
) STRICT;

CREATE TABLE transactions (
	id         TEXT PRIMARY KEY,
	state      TEXT NOT NULL CHECK (state IN ('PREPARED', 'COMMITTED', 'ABORTED')),
	reason     TEXT NOT NULL DEFAULT '',
	message    TEXT NOT NULL DEFAULT '',
	deadline   INTEGER,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	CHECK (state = 'ABORTED' OR reason = '')
) STRICT;

CREATE INDEX transactions_prepared_by_deadline ON transactions (deadline) WHERE state = 'PREPARED';

CREATE TABLE legs (
	txn_id     TEXT NOT NULL REFERENCES transactions (id),
	seq        INTEGER NOT NULL,
	account_id TEXT NOT NULL,
	direction  TEXT NOT NULL CHECK (direction IN ('DEBIT', 'CREDIT')),
	amount     INTEGER NOT NULL CHECK (amount > 0),
	currency   TEXT NOT NULL,
	PRIMARY KEY (txn_id, seq)
) STRICT, WITHOUT ROWID;
`,
	// A transaction's legs move into its row, as a JSON array in the order given at prepare
	// (see encodeLegs): one row to write and to read per transaction instead of one per leg too.
	// A tombstone has '[]'.
	`
ALTER TABLE transactions ADD COLUMN legs_json TEXT NOT NULL DEFAULT '[]';

UPDATE transactions SET legs_json = (
	SELECT json_group_array(json_object(
		'account', account_id, 'direction', direction, 'amount', amount, 'currency', currency) ORDER BY seq)
	FROM legs WHERE legs.txn_id = transactions.id
) WHERE id IN (SELECT txn_id FROM legs);

DROP TABLE legs;
`,
	// Round 2's trust: the coordinator's proof that it sent a transaction to this bank, kept to
	// present in GetDecision (empty for transactions prepared before it existed, and for
	// tombstones); and one-time enrollment codes that prove a registering user holds an account,
	// stored only as hashes.
	`
ALTER TABLE transactions ADD COLUMN decision_proof BLOB NOT NULL DEFAULT X'';

CREATE TABLE enrollment_codes (
	account_id  TEXT PRIMARY KEY REFERENCES accounts (id),
	code_hash   BLOB NOT NULL,
	created_at  INTEGER NOT NULL,
	expires_at  INTEGER NOT NULL,
	failures    INTEGER NOT NULL DEFAULT 0,
	redeemed_by TEXT,
	redeemed_at INTEGER
) STRICT;
`,
	// The operators' work: the journal of deposits and withdrawals (entries, in seq order, each
	// written with the balance change it makes), the requests that opened accounts (replays of a
	// request_id find their account), and the initial total that conservation is checked
	// against: ImportAccounts records it; a ledger that has accounts already gets the sum of
	// its balances now, since no entry existed before.
	`
CREATE TABLE entries (
	entry_id      TEXT PRIMARY KEY,
	seq           INTEGER NOT NULL UNIQUE,
	kind          TEXT NOT NULL CHECK (kind IN ('DEPOSIT', 'WITHDRAWAL')),
	account_id    TEXT NOT NULL REFERENCES accounts (id),
	amount        INTEGER NOT NULL CHECK (amount > 0),
	currency      TEXT NOT NULL,
	actor         TEXT NOT NULL,
	reason        TEXT NOT NULL,
	balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
	created_at    INTEGER NOT NULL
) STRICT;

CREATE INDEX entries_by_account ON entries (account_id, seq);

CREATE TABLE account_requests (
	request_id TEXT PRIMARY KEY,
	account_id TEXT NOT NULL UNIQUE REFERENCES accounts (id),
	holder     TEXT NOT NULL,
	currency   TEXT NOT NULL,
	created_at INTEGER NOT NULL
) STRICT;

INSERT INTO meta (key, value) SELECT 'initial', CAST(coalesce(sum(balance), 0) AS TEXT) FROM accounts;
`}

// Ledger is a bank's durable store of accounts and transactions. Every method that changes money
// runs as one SQLite transaction on the single writer connection (BEGIN IMMEDIATE), so concurrent
// calls are serialised and can never overdraw an account. It is safe for concurrent use.
type Ledger struct {
	db   *sqlitedb.DB
	bank string
}

// OpenLedger opens, creating if needed, the ledger of bank bankName in the SQLite file at path.
// A ledger file remembers its bank: opening it for another bank fails with ErrWrongBank. Options,
// if given, tune the store (see sqlitedb.Options); several are merged, a setting made in any of
// them applying.
func OpenLedger(ctx context.Context, path, bankName string, opts ...sqlitedb.Options) (*Ledger, error) {
	if bankName == "" {
		return nil, fmt.Errorf("open ledger: %w: empty bank name", ErrInvalidArgument)
	}
	var o sqlitedb.Options
	for _, opt := range opts {
		o.NoGroupCommit = o.NoGroupCommit || opt.NoGroupCommit
	}
	db, err := sqlitedb.OpenWith(ctx, path, migrations, o)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	l := &Ledger{db: db, bank: bankName}
	err = l.write(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		var owner string
		err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'bank'`).Scan(&owner)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('bank', ?)`, bankName)
			return err
		case err != nil:
			return err
		case owner != bankName:
			return fmt.Errorf("%w: %s is the ledger of %q, not %q", ErrWrongBank, path, owner, bankName)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	return l, nil
}

// Close closes the ledger's database.
func (l *Ledger) Close() error { return l.db.Close() }

// Bank returns the name of the bank the ledger belongs to.
func (l *Ledger) Bank() string { return l.bank }

// write runs fn in a write transaction, shared with concurrent writers (group commit, see
// sqlitedb.DB.Update), and returns once its effects are durable; an error undoes all of fn.
func (l *Ledger) write(ctx context.Context, fn func(ctx context.Context, tx *sqlitedb.Tx) error) error {
	return l.db.Update(ctx, fn)
}

// CountAccounts returns the number of accounts in the ledger.
func (l *Ledger) CountAccounts(ctx context.Context) (int, error) {
	var n int
	if err := l.db.Read.QueryRowContext(ctx, `SELECT count(*) FROM accounts`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count accounts: %w", err)
	}
	return n, nil
}

// ImportAccounts inserts the opening accounts in one transaction, and records the sum of their
// balances as the ledger's initial total (see Summary). It refuses with ErrLedgerNotEmpty when
// the ledger already has accounts: the ledger, not a fixtures file, is the truth once the bank
// has started; and with ErrInvalidArgument accounts whose balances total more than an int64.
func (l *Ledger) ImportAccounts(ctx context.Context, accounts []Account) error {
	for _, a := range accounts {
		if err := checkAccountID(a.ID, l.bank); err != nil {
			return fmt.Errorf("import accounts: %w: %w", ErrInvalidArgument, err)
		}
		if !money.Known(a.Currency) || a.Balance < 0 || a.Held != 0 || a.PendingCredit != 0 {
			return fmt.Errorf("import accounts: %w: account %q: want a known currency, a balance >= 0 and no holds", ErrInvalidArgument, a.ID)
		}
	}
	initial, err := sumBalances(accounts)
	if err != nil {
		return fmt.Errorf("import accounts: %w", err)
	}
	err = l.write(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM accounts`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return ErrLedgerNotEmpty
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('initial', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
			strconv.FormatInt(initial, 10)); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO accounts (id, holder, currency, balance, closed) VALUES (?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, a := range accounts {
			if _, err := stmt.ExecContext(ctx, a.ID, a.Holder, a.Currency, a.Balance, a.Closed); err != nil {
				return fmt.Errorf("account %q: %w", a.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("import accounts: %w", err)
	}
	return nil
}

// Prepare is phase one of transaction txnID: it votes YES after durably recording a hold on every
// debited account and a pending credit on every credited account, or votes NO with a reason.
//
// A transaction already known with the same legs gets its recorded answer again (YES when
// PREPARED or COMMITTED, NO with the recorded reason when ABORTED, ALREADY_ABORTED for a
// tombstone); with different legs it gets NO (CONFLICT) and nothing is recorded. A new
// transaction arriving after deadline (now is after deadline) is recorded ABORTED with
// DEADLINE_EXCEEDED. Otherwise each leg is checked: the account exists here and is open, the
// currencies match, a debit's amount is available, a credit cannot overflow the balance. If any
// check fails nothing is held and the transaction is recorded ABORTED with the first failure's
// reason, so that a retry gets the same NO and a Commit is refused.
//
// The vote is returned only once the record is durable. A NO vote is a result, not an error: the
// error is for invalid arguments (ErrInvalidArgument) and storage failures.
func (l *Ledger) Prepare(ctx context.Context, txnID string, legs []Leg, deadline, now time.Time) (Vote, error) {
	return l.PrepareItem(ctx, PrepareItem{TxnID: txnID, Legs: legs, Deadline: deadline}, now)
}

// PrepareItem is Prepare with every argument of a prepare, the coordinator's decision proof
// included: a new transaction stores it.
func (l *Ledger) PrepareItem(ctx context.Context, it PrepareItem, now time.Time) (Vote, error) {
	r := l.newPrepareRun([]PrepareItem{it}, now)
	if r.errs[0] != nil {
		return Vote{}, r.errs[0]
	}
	if err := l.write(ctx, r.apply); err != nil {
		return Vote{}, err
	}
	r.finish()
	return r.votes[0], nil
}

// prepareTx does Prepare's work inside tx; recorded says whether it wrote anything.
func (l *Ledger) prepareTx(ctx context.Context, tx *sqlitedb.Tx, it PrepareItem, now time.Time) (Vote, bool, error) {
	txnID, legs, deadline := it.TxnID, it.Legs, it.Deadline
	// The transaction is recorded first, as if the vote were YES (or the deadline's NO), and only
	// if it is new: a known one is answered from its record. This is one statement for the usual
	// case, a new transaction; a leg that fails its check turns the record into the NO below.
	state, first := Prepared, Vote{Yes: true}
	if now.After(deadline) {
		state, first = Aborted, Vote{Reason: ReasonDeadlineExceeded, Message: fmt.Sprintf(
			"transaction %s arrived at %s, after its deadline %s", txnID, now.UTC().Format(time.RFC3339Nano), deadline.UTC().Format(time.RFC3339Nano))}
	}
	inserted, err := insertTransactionIfNew(ctx, tx, txnID, state, first, legs, deadline, it.DecisionProof, now)
	if err != nil {
		return Vote{}, false, err
	}
	if !inserted {
		known, err := loadTransaction(ctx, tx, txnID)
		if err != nil {
			return Vote{}, false, err
		}
		return replayVote(known, legs), false, nil
	}
	if state == Aborted {
		return first, true, nil
	}
	no := func(v Vote) (Vote, bool, error) {
		if err := execOne(ctx, tx, `UPDATE transactions SET state = 'ABORTED', reason = ?, message = ? WHERE id = ?`, v.Reason, v.Message, txnID); err != nil {
			return Vote{}, false, fmt.Errorf("record vote: %w", err)
		}
		return v, true, nil
	}

	// Check every leg against the accounts as the earlier legs of this transaction left them, so
	// that two legs on one account are checked together.
	accounts := make(map[string]*Account, len(legs))
	var order []string
	for _, g := range legs {
		a, ok := accounts[g.Account]
		if !ok {
			got, err := loadAccount(ctx, tx, g.Account)
			if errors.Is(err, ErrUnknownAccount) {
				return no(Vote{Reason: ReasonUnknownAccount, Message: l.unknownAccountMessage(g.Account)})
			}
			if err != nil {
				return Vote{}, false, err
			}
			a = &got
			accounts[g.Account] = a
			order = append(order, g.Account)
		}
		if v := checkLeg(a, g); v.Reason != ReasonNone {
			return no(v)
		}
	}
	for _, id := range order {
		a := accounts[id]
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET held = ?, pending_credit = ? WHERE id = ?`, a.Held, a.PendingCredit, a.ID); err != nil {
			return Vote{}, false, fmt.Errorf("hold on %s: %w", a.ID, err)
		}
	}
	return first, true, nil
}

func (l *Ledger) unknownAccountMessage(id string) string {
	if owner, _, ok := account.Split(id); ok && owner != l.bank {
		return fmt.Sprintf("account %s belongs to bank %s, not to %s", id, owner, l.bank)
	}
	return fmt.Sprintf("account %s does not exist at bank %s", id, l.bank)
}

// Commit is phase two of a prepared transaction: holds are taken from the debited balances and
// pending credits added to the credited ones. Committing a committed transaction succeeds and
// changes nothing. Committing an aborted transaction fails with ErrAlreadyAborted, an unknown one
// with ErrUnknownTransaction. It returns once the commit is durable.
func (l *Ledger) Commit(ctx context.Context, txnID string) error {
	return l.completeOne(ctx, Completion{TxnID: txnID, Outcome: Committed})
}

// completeOne is the completion c alone in its own write, its error as Commit or Abort returns
// it.
func (l *Ledger) completeOne(ctx context.Context, c Completion) error {
	r := newCompleteRun([]Completion{c})
	if r.errs[0] != nil {
		return r.errs[0]
	}
	if err := l.write(ctx, r.apply); err != nil {
		return err
	}
	r.finish()
	return r.errs[0]
}

// commitTx does Commit's work inside tx. A refusal (ErrUnknownTransaction, ErrAlreadyAborted) is
// found before anything is written and returned as refused; err is a failure that may come after
// some of the commit's writes, which the caller must then undo. applied says whether the commit
// changed the ledger (false for a transaction already committed).
func commitTx(ctx context.Context, tx *sqlitedb.Tx, txnID string) (applied bool, refused, err error) {
	// The usual case, a prepared transaction, is one statement that marks it committed and
	// returns its legs; anything else is read to say why not.
	var legsJSON []byte
	err = tx.QueryRowContext(ctx, `UPDATE transactions SET state = 'COMMITTED', updated_at = ? WHERE id = ? AND state = 'PREPARED' RETURNING legs_json`,
		time.Now().UnixNano(), txnID).Scan(&legsJSON)
	if errors.Is(err, sql.ErrNoRows) {
		t, err := loadTransaction(ctx, tx, txnID)
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
	for _, g := range legs {
		q := `UPDATE accounts SET balance = balance - ?1, held = held - ?1 WHERE id = ?2`
		if g.Direction == Credit {
			q = `UPDATE accounts SET balance = balance + ?1, pending_credit = pending_credit - ?1 WHERE id = ?2`
		}
		if err := execOne(ctx, tx, q, g.Amount, g.Account); err != nil {
			return false, nil, fmt.Errorf("apply %s of %d to %s: %w", strings.ToLower(string(g.Direction)), g.Amount, g.Account, err)
		}
	}
	return true, nil, nil
}

// Abort releases a prepared transaction's holds and pending credits. Aborting an aborted
// transaction succeeds and changes nothing; aborting an unknown one records a tombstone so that a
// late prepare votes NO; aborting a committed one fails with ErrAlreadyCommitted. It returns once
// the abort is durable.
func (l *Ledger) Abort(ctx context.Context, txnID string) error {
	return l.completeOne(ctx, Completion{TxnID: txnID, Outcome: Aborted})
}

// abortTx does Abort's work inside tx. Its results are as commitTx's: the refusal
// (ErrAlreadyCommitted) is found before anything is written; applied is false for a transaction
// already aborted.
func abortTx(ctx context.Context, tx *sqlitedb.Tx, txnID string) (applied bool, refused, err error) {
	t, err := loadTransaction(ctx, tx, txnID)
	if errors.Is(err, ErrUnknownTransaction) {
		if err := insertTransaction(ctx, tx, txnID, Aborted, Vote{}, nil, time.Time{}, time.Now()); err != nil {
			return false, nil, err
		}
		return true, nil, nil
	}
	if err != nil {
		return false, nil, err
	}
	switch t.State {
	case Aborted:
		return false, nil, nil
	case Committed:
		return false, ErrAlreadyCommitted, nil
	}
	for _, g := range t.Legs {
		q := `UPDATE accounts SET held = held - ? WHERE id = ?`
		if g.Direction == Credit {
			q = `UPDATE accounts SET pending_credit = pending_credit - ? WHERE id = ?`
		}
		if err := execOne(ctx, tx, q, g.Amount, g.Account); err != nil {
			return false, nil, fmt.Errorf("release %s of %d on %s: %w", strings.ToLower(string(g.Direction)), g.Amount, g.Account, err)
		}
	}
	if err := setState(ctx, tx, txnID, Aborted); err != nil {
		return false, nil, err
	}
	return true, nil, nil
}

func (l *Ledger) newPrepareRun(items []PrepareItem, now time.Time) *prepareRun {
	r := &prepareRun{l: l, items: items, now: now, errs: make([]error, len(items)),
		votes: make([]Vote, len(items)), recorded: make([]bool, len(items))}
	for i, it := range items {
		if err := checkLegs(it.TxnID, it.Legs, it.Deadline); err != nil {
			r.errs[i] = fmt.Errorf("prepare %s: %w", it.TxnID, err)
			continue
		}
		r.valid++
	}
	return r
}

// apply prepares the valid items in tx, in order, and sets their results. The write runs it once
// (sqlitedb.DB.Update does not retry); when it returns an error, or the write fails after it,
// nothing it wrote is kept and the caller discards the results.
func (r *prepareRun) apply(ctx context.Context, tx *sqlitedb.Tx) error {
	for i, it := range r.items {
		if r.errs[i] != nil {
			continue
		}
		v, rec, err := r.l.prepareTx(ctx, tx, it, r.now)
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

// apply completes the valid items in tx, in order, and sets their results, as prepareRun.apply.
func (r *completeRun) apply(ctx context.Context, tx *sqlitedb.Tx) error {
	for i, c := range r.items {
		if r.errs[i] != nil {
			continue
		}
		action, do := "commit", commitTx
		if c.Outcome == Aborted {
			action, do = "abort", abortTx
		}
		ok, refused, err := do(ctx, tx, c.TxnID)
		if err != nil {
			return fmt.Errorf("%s %s: %w", action, c.TxnID, err)
		}
		if refused != nil {
			r.refusals[i] = fmt.Errorf("%s %s: %w", action, c.TxnID, refused)
		}
		r.applied[i] = ok
	}
	return nil
}

// Batch completes, then prepares, in one ledger write, in order: each completion as Commit or
// Abort would, then each prepare as Prepare would at now, each item seeing the effects of
// the items before it (a hold released by an abort is available to the prepares, a prepare sees
// the holds of the prepares before it, and a transaction id repeated among the prepares is a
// replay of its first one). It returns once every item's effect is durable.
//
// The per-item results are what the single calls would return for each item in turn:
// completeErrs[i] is Commit's or Abort's error (ErrInvalidArgument, also for an Outcome that is
// neither Committed nor Aborted; ErrUnknownTransaction, ErrAlreadyAborted, ErrAlreadyCommitted),
// votes[i] and prepareErrs[i] are Prepare's (an item with invalid arguments gets its
// ErrInvalidArgument error and a zero vote). Such an item changes nothing and the others go on.
// err is a failure of the whole batch (a storage failure, a context ended before the write
// started): then nothing of the batch is applied and there are no per-item results.
func (l *Ledger) Batch(ctx context.Context, completions []Completion, prepares []PrepareItem, now time.Time) (completeErrs []error, votes []Vote, prepareErrs []error, err error) {
	c, p := newCompleteRun(completions), l.newPrepareRun(prepares, now)
	if c.valid+p.valid > 0 {
		err = l.write(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
			if err := c.apply(ctx, tx); err != nil {
				return err
			}
			return p.apply(ctx, tx)
		})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("batch of %d completions and %d prepares: %w", len(completions), len(prepares), err)
		}
	}
	c.finish()
	p.finish()
	return c.errs, p.votes, p.errs, nil
}

// execOne runs an UPDATE that must change exactly one row.
func execOne(ctx context.Context, tx *sqlitedb.Tx, query string, args ...any) error {
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("%d rows changed, want 1 (%v)", n, err)
	}
	return nil
}

func setState(ctx context.Context, tx *sqlitedb.Tx, txnID string, s State) error {
	return execOne(ctx, tx, `UPDATE transactions SET state = ?, updated_at = ? WHERE id = ?`, s, time.Now().UnixNano(), txnID)
}

func insertTransaction(ctx context.Context, tx *sqlitedb.Tx, txnID string, s State, v Vote, legs []Leg, deadline, now time.Time) error {
	var dl sql.NullInt64
	if !deadline.IsZero() {
		dl = sql.NullInt64{Int64: deadline.UnixNano(), Valid: true}
	}
	legsJSON, err := encodeLegs(legs)
	if err != nil {
		return fmt.Errorf("record transaction: %w", err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO transactions (id, state, reason, message, deadline, created_at, updated_at, legs_json)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, txnID, s, v.Reason, v.Message, dl, now.UnixNano(), now.UnixNano(), legsJSON)
	if err != nil {
		return fmt.Errorf("record transaction: %w", err)
	}
	return nil
}

// insertTransactionIfNew is insertTransaction for a transaction id not recorded yet; inserted
// is false, and nothing is written, when it is.
func insertTransactionIfNew(ctx context.Context, tx *sqlitedb.Tx, txnID string, s State, v Vote, legs []Leg, deadline time.Time, proof []byte, now time.Time) (inserted bool, err error) {
	legsJSON, err := encodeLegs(legs)
	if err != nil {
		return false, fmt.Errorf("record transaction: %w", err)
	}
	if proof == nil {
		proof = []byte{}
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO transactions (id, state, reason, message, deadline, created_at, updated_at, legs_json, decision_proof)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		txnID, s, v.Reason, v.Message, deadline.UnixNano(), now.UnixNano(), now.UnixNano(), legsJSON, proof)
	if err != nil {
		return false, fmt.Errorf("record transaction: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("record transaction: %w", err)
	}
	return n == 1, nil
}

// querier is what reads need: a *sql.Tx, a *sql.DB or a *sqlitedb.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// accountError wraps ErrUnknownAccount with the account and, for another bank's account, its bank.
func (l *Ledger) accountError(action, id string, err error) error {
	if errors.Is(err, ErrUnknownAccount) {
		return fmt.Errorf("%s: %w: %s", action, ErrUnknownAccount, l.unknownAccountMessage(id))
	}
	return fmt.Errorf("%s: %w", action, err)
}

// Account returns one account. An account that is not at this bank is ErrUnknownAccount.
func (l *Ledger) Account(ctx context.Context, id string) (Account, error) {
	a, err := loadAccount(ctx, l.db.Read, id)
	if err != nil {
		return Account{}, l.accountError("get account", id, err)
	}
	return a, nil
}

// Balances returns the named accounts, in the order asked, read from one snapshot. It fails with
// ErrUnknownAccount, naming the account, if any of them is not at this bank.
func (l *Ledger) Balances(ctx context.Context, ids []string) ([]Account, error) {
	tx, err := l.db.Read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("balances: %w", err)
	}
	defer tx.Rollback()
	out := make([]Account, 0, len(ids))
	for _, id := range ids {
		a, err := loadAccount(ctx, tx, id)
		if err != nil {
			return nil, l.accountError("balances", id, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// ListAccounts returns up to pageSize accounts in id order, starting after the position encoded
// in pageToken ("" for the first page), and the token of the next page ("" after the last one).
// Tokens are opaque to callers; a malformed one is ErrInvalidPageToken.
func (l *Ledger) ListAccounts(ctx context.Context, pageSize int, pageToken string) ([]Account, string, error) {
	if pageSize <= 0 {
		return nil, "", fmt.Errorf("list accounts: %w: page size %d", ErrInvalidArgument, pageSize)
	}
	after, err := decodeAccountPageToken(pageToken)
	if err != nil {
		return nil, "", err
	}
	rows, err := l.db.Read.QueryContext(ctx, `SELECT `+accountColumns+` FROM accounts WHERE id > ? ORDER BY id LIMIT ?`, after, pageSize+1)
	if err != nil {
		return nil, "", fmt.Errorf("list accounts: %w", err)
	}
	defer rows.Close()
	return accountPage(rows, pageSize)
}

// Transaction returns the record of one transaction, or ErrUnknownTransaction.
func (l *Ledger) Transaction(ctx context.Context, txnID string) (Transaction, error) {
	tx, err := l.db.Read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return Transaction{}, fmt.Errorf("get transaction %s: %w", txnID, err)
	}
	defer tx.Rollback()
	t, err := loadTransaction(ctx, tx, txnID)
	if err != nil {
		return Transaction{}, fmt.Errorf("get transaction %s: %w", txnID, err)
	}
	return t, nil
}

// PreparedBefore lists the PREPARED transactions whose deadline is before t, oldest deadline
// first: the transactions in doubt, whose outcome the bank must ask the coordinator for.
func (l *Ledger) PreparedBefore(ctx context.Context, t time.Time) ([]Transaction, error) {
	tx, err := l.db.Read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("prepared before: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT id FROM transactions WHERE state = 'PREPARED' AND deadline < ? ORDER BY deadline, id`, t.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("prepared before: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("prepared before: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("prepared before: %w", err)
	}
	out := make([]Transaction, 0, len(ids))
	for _, id := range ids {
		t, err := loadTransaction(ctx, tx, id)
		if err != nil {
			return nil, fmt.Errorf("prepared before: %s: %w", id, err)
		}
		out = append(out, t)
	}
	return out, nil
}

func loadTransaction(ctx context.Context, q querier, txnID string) (Transaction, error) {
	t := Transaction{ID: txnID}
	var dl sql.NullInt64
	var created, updated int64
	var legsJSON []byte
	err := q.QueryRowContext(ctx, `SELECT state, reason, message, deadline, created_at, updated_at, legs_json, decision_proof FROM transactions WHERE id = ?`, txnID).
		Scan(&t.State, &t.Reason, &t.Message, &dl, &created, &updated, &legsJSON, &t.DecisionProof)
	if errors.Is(err, sql.ErrNoRows) {
		return Transaction{}, ErrUnknownTransaction
	}
	if err != nil {
		return Transaction{}, fmt.Errorf("load transaction: %w", err)
	}
	if dl.Valid {
		t.Deadline = time.Unix(0, dl.Int64).UTC()
	}
	t.CreatedAt, t.UpdatedAt = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	if t.Legs, err = decodeLegs(legsJSON); err != nil {
		return Transaction{}, fmt.Errorf("load transaction: %w", err)
	}
	return t, nil
}

func loadAccount(ctx context.Context, q querier, id string) (Account, error) {
	a, err := scanAccount(q.QueryRowContext(ctx, `SELECT `+accountColumns+` FROM accounts WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Account{}, ErrUnknownAccount
	}
	if err != nil {
		return Account{}, fmt.Errorf("load account %s: %w", id, err)
	}
	return a, nil
}
