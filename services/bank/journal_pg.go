package bank

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The operators' procedures on the PostgreSQL ledger, with the semantics of Ledger's (see
// journal_sqlite.go). A deposit, a withdrawal or a close locks its account FOR UPDATE before it
// looks at the account's money, as a prepare does, so that they are serialised with the
// prepares, commits and aborts of that account.

// pgOpenAccountLockKey is the transaction-scoped advisory lock held by OpenAccount and
// ImportAccounts, so that two of them never pick the same account number.
const pgOpenAccountLockKey int64 = 0x7061796761746511 // "paygate" and 11, the bank's account numbers

// OpenAccount is Ledger.OpenAccount.
func (l *PGLedger) OpenAccount(ctx context.Context, requestID, holder, currency string, now time.Time) (a Account, replayed bool, err error) {
	if err := checkOpenAccount(requestID, holder, currency); err != nil {
		return Account{}, false, fmt.Errorf("open account: %w", err)
	}
	err = l.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		a, replayed = Account{}, false
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, pgOpenAccountLockKey); err != nil {
			return err
		}
		var id, h, c string
		err := tx.QueryRow(ctx, `SELECT account_id, holder, currency FROM account_requests WHERE request_id = $1`, requestID).Scan(&id, &h, &c)
		switch {
		case err == nil:
			if h != holder || c != currency {
				return fmt.Errorf("%w: request %s opened account %s for %q in %s", ErrRequestIDReused, requestID, id, h, c)
			}
			a, err = pgLoadAccount(ctx, tx, id)
			replayed = true
			return err
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		var highest int64
		err = tx.QueryRow(ctx, `SELECT coalesce(max(substr(id, $1)::bigint), 0) FROM accounts WHERE substr(id, $1) ~ $2`,
			len(l.bank)+2, fmt.Sprintf("^[0-9]{1,%d}$", maxAccountNumberDigits)).Scan(&highest)
		if err != nil {
			return fmt.Errorf("highest account number: %w", err)
		}
		if id, err = nextAccountID(l.bank, highest); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO accounts (id, holder, currency, balance) VALUES ($1, $2, $3, 0)`, id, holder, currency); err != nil {
			return fmt.Errorf("insert account %s: %w", id, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO account_requests (request_id, account_id, holder, currency, created_at) VALUES ($1, $2, $3, $4, $5)`,
			requestID, id, holder, currency, now.UnixNano()); err != nil {
			return fmt.Errorf("record request %s: %w", requestID, err)
		}
		a = Account{ID: id, Holder: holder, Currency: currency}
		return nil
	})
	if err != nil {
		return Account{}, false, fmt.Errorf("open account: %w", err)
	}
	return a, replayed, nil
}

// pgLockAccount locks account id FOR UPDATE and returns it, or ErrUnknownAccount.
func pgLockAccount(ctx context.Context, tx pgx.Tx, id string) (Account, error) {
	locked, err := pgLockAccounts(ctx, tx, []string{id})
	if err != nil {
		return Account{}, err
	}
	a, ok := locked[id]
	if !ok {
		return Account{}, ErrUnknownAccount
	}
	return a, nil
}

// CloseAccount is Ledger.CloseAccount. The account is locked before its money is looked at: a
// prepare holding its lock first leaves its hold to refuse the close; one waiting for it votes
// NO on the closed account.
func (l *PGLedger) CloseAccount(ctx context.Context, id string) (Account, error) {
	if err := checkAccountArg(id); err != nil {
		return Account{}, fmt.Errorf("close account: %w", err)
	}
	var a Account
	err := l.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		if a, err = pgLockAccount(ctx, tx, id); err != nil || a.Closed {
			return err
		}
		if err := checkCloseable(a); err != nil {
			return err
		}
		a.Closed = true
		return pgExecOne(ctx, tx, `UPDATE accounts SET closed = true WHERE id = $1`, id)
	})
	if err != nil {
		return Account{}, l.accountError("close account", id, err)
	}
	return a, nil
}

// PostEntry is Ledger.PostEntry. Two posts of one entry id at once: the second's insert waits
// for the first's transaction and then finds the entry, which it answers as a replay (or
// refuses as reused).
func (l *PGLedger) PostEntry(ctx context.Context, e Entry, now time.Time) (out Entry, replayed bool, err error) {
	if err := checkEntry(e); err != nil {
		return Entry{}, false, fmt.Errorf("post entry: %w", err)
	}
	e.CreatedAt = time.Unix(0, now.UnixNano()).UTC()
	err = l.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		out, replayed = Entry{}, false
		known := func() error {
			stored, err := pgLoadEntry(ctx, tx, e.ID)
			if err != nil {
				return err
			}
			if !sameEntry(stored, e) {
				return reusedEntryError(stored)
			}
			out, replayed = stored, true
			return nil
		}
		if err := known(); !errors.Is(err, errNoEntry) {
			return err
		}
		a, err := pgLockAccount(ctx, tx, e.Account)
		if err != nil {
			return err
		}
		next := e
		if next.BalanceAfter, err = applyEntry(a, e); err != nil {
			return err
		}
		err = tx.QueryRow(ctx, `INSERT INTO entries (entry_id, kind, account_id, amount, currency, actor, reason, balance_after, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (entry_id) DO NOTHING RETURNING seq`,
			e.ID, string(e.Kind), e.Account, e.Amount, e.Currency, e.Actor, e.Reason, next.BalanceAfter, e.CreatedAt.UnixNano()).Scan(&next.seq)
		if errors.Is(err, pgx.ErrNoRows) {
			return known() // journaled meanwhile by a concurrent post of the same id
		}
		if err != nil {
			return fmt.Errorf("journal: %w", err)
		}
		if err := pgExecOne(ctx, tx, `UPDATE accounts SET balance = $1 WHERE id = $2`, next.BalanceAfter, e.Account); err != nil {
			return fmt.Errorf("apply to %s: %w", e.Account, err)
		}
		out = next
		return nil
	})
	if err != nil {
		return Entry{}, false, l.accountError("post entry "+e.ID, e.Account, err)
	}
	return out, replayed, nil
}

func pgLoadEntry(ctx context.Context, q pgQuerier, id string) (Entry, error) {
	e, err := scanEntry(q.QueryRow(ctx, `SELECT `+entryColumns+` FROM entries WHERE entry_id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Entry{}, errNoEntry
	}
	if err != nil {
		return Entry{}, fmt.Errorf("load entry %s: %w", id, err)
	}
	return e, nil
}

// ListEntries is Ledger.ListEntries.
func (l *PGLedger) ListEntries(ctx context.Context, accountID string, pageSize int, pageToken string) ([]Entry, string, error) {
	before, err := checkListEntries(accountID, pageSize, pageToken)
	if err != nil {
		return nil, "", err
	}
	var rows pgx.Rows
	if accountID == "" {
		rows, err = l.pool.Query(ctx, `SELECT `+entryColumns+` FROM entries WHERE seq < $1 ORDER BY seq DESC LIMIT $2`, before, pageSize+1)
	} else {
		rows, err = l.pool.Query(ctx, `SELECT `+entryColumns+` FROM entries WHERE account_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3`,
			accountID, before, pageSize+1)
	}
	if err != nil {
		return nil, "", fmt.Errorf("list entries: %w", err)
	}
	defer rows.Close()
	return entryPage(rows, pageSize)
}

// Summary is Ledger.Summary, read in one REPEATABLE READ snapshot.
func (l *PGLedger) Summary(ctx context.Context) (Summary, error) {
	var s Summary
	err := l.readTx(ctx, func(tx pgx.Tx) error {
		s = Summary{}
		var initial string
		err := tx.QueryRow(ctx, `SELECT count(*), coalesce(sum(balance), 0)::bigint, coalesce(sum(held), 0)::bigint,
			coalesce(sum(pending_credit), 0)::bigint FROM accounts`).Scan(&s.Accounts, &s.Balance, &s.Held, &s.PendingCredit)
		if err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT value FROM meta WHERE key = 'initial'`).Scan(&initial); err != nil {
			return err
		}
		if s.Initial, err = parseInitial(initial); err != nil {
			return err
		}
		err = tx.QueryRow(ctx, `SELECT coalesce(sum(amount) FILTER (WHERE kind = 'DEPOSIT'), 0)::bigint,
			coalesce(sum(amount) FILTER (WHERE kind = 'WITHDRAWAL'), 0)::bigint FROM entries`).Scan(&s.Deposited, &s.Withdrawn)
		if err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT count(*) FROM transactions WHERE state = 'PREPARED'`).Scan(&s.Prepared)
	})
	if err != nil {
		return Summary{}, fmt.Errorf("ledger summary: %w", err)
	}
	return s, nil
}
