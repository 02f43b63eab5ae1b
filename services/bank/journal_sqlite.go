package bank

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/paygate/paygate/internal/money"
	"github.com/paygate/paygate/internal/sqlitedb"
)

// The operators' procedures on the SQLite ledger (see journal.go for their rules). Each write is
// one transaction on the single writer connection, so a deposit, a withdrawal or a close is
// serialised with every prepare, commit and abort.

// errNoEntry is loadEntry's answer for an entry id not in the journal.
var errNoEntry = errors.New("bank: no such entry")

// OpenAccount opens an account of holder in currency with a zero balance and returns it. Its id
// is "<bank>-<n>", n one more than the highest number of the bank's accounts (numbers of up to
// 18 digits; other ids are ignored), 1 for the first. The same requestID again returns the
// account it opened, as it is now, with replayed true, and opens nothing; with another holder or
// currency it is refused with ErrRequestIDReused.
func (l *Ledger) OpenAccount(ctx context.Context, requestID, holder, currency string, now time.Time) (a Account, replayed bool, err error) {
	if err := checkOpenAccount(requestID, holder, currency); err != nil {
		return Account{}, false, fmt.Errorf("open account: %w", err)
	}
	err = l.write(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		a, replayed = Account{}, false
		var id, h, c string
		err := tx.QueryRowContext(ctx, `SELECT account_id, holder, currency FROM account_requests WHERE request_id = ?`, requestID).Scan(&id, &h, &c)
		switch {
		case err == nil:
			if h != holder || c != currency {
				return fmt.Errorf("%w: request %s opened account %s for %q in %s", ErrRequestIDReused, requestID, id, h, c)
			}
			a, err = loadAccount(ctx, tx, id)
			replayed = true
			return err
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		var highest int64
		start := len(l.bank) + 2 // the number's first character, counting from 1
		err = tx.QueryRowContext(ctx, `SELECT coalesce(max(CAST(substr(id, ?1) AS INTEGER)), 0) FROM accounts
			WHERE length(id) >= ?1 AND length(id) - ?1 < ?2 AND substr(id, ?1) NOT GLOB '*[^0-9]*'`,
			start, maxAccountNumberDigits).Scan(&highest)
		if err != nil {
			return fmt.Errorf("highest account number: %w", err)
		}
		if id, err = nextAccountID(l.bank, highest); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO accounts (id, holder, currency, balance) VALUES (?, ?, ?, 0)`, id, holder, currency); err != nil {
			return fmt.Errorf("insert account %s: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO account_requests (request_id, account_id, holder, currency, created_at) VALUES (?, ?, ?, ?, ?)`,
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

// CloseAccount closes account id and returns it. It is refused with ErrAccountNotEmpty unless
// the balance, the holds and the pending credits are all zero, checked in the write that closes
// it: a prepare comes before (and its hold refuses the close) or after (and votes NO,
// ACCOUNT_CLOSED). Closing a closed account returns it as it is; an unknown one is
// ErrUnknownAccount.
func (l *Ledger) CloseAccount(ctx context.Context, id string) (Account, error) {
	if err := checkAccountArg(id); err != nil {
		return Account{}, fmt.Errorf("close account: %w", err)
	}
	var a Account
	err := l.write(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		var err error
		if a, err = loadAccount(ctx, tx, id); err != nil || a.Closed {
			return err
		}
		if err := checkCloseable(a); err != nil {
			return err
		}
		a.Closed = true
		return execOne(ctx, tx, `UPDATE accounts SET closed = 1 WHERE id = ?`, id)
	})
	if err != nil {
		return Account{}, l.accountError("close account", id, err)
	}
	return a, nil
}

// PostEntry journals the deposit or withdrawal e (its ID, Kind, Account, Amount, Currency, Actor
// and Reason) at now and applies it to the account's balance, in one write, and returns the
// entry as stored. An entry id already journaled with the same kind, account, amount and
// currency returns the stored entry with replayed true and changes nothing; with other
// parameters it is refused with ErrEntryIDReused. It is refused, and nothing is journaled, for an
// unknown account (ErrUnknownAccount), a closed one (ErrAccountClosed), another currency
// (ErrCurrencyMismatch), a withdrawal above the available balance (ErrInsufficientFunds) and a
// deposit that would overflow the balance (ErrBalanceOverflow).
func (l *Ledger) PostEntry(ctx context.Context, e Entry, now time.Time) (out Entry, replayed bool, err error) {
	if err := checkEntry(e); err != nil {
		return Entry{}, false, fmt.Errorf("post entry: %w", err)
	}
	e.CreatedAt = time.Unix(0, now.UnixNano()).UTC()
	err = l.write(ctx, func(ctx context.Context, tx *sqlitedb.Tx) error {
		out, replayed = Entry{}, false
		stored, err := loadEntry(ctx, tx, e.ID)
		switch {
		case err == nil:
			if !sameEntry(stored, e) {
				return reusedEntryError(stored)
			}
			out, replayed = stored, true
			return nil
		case !errors.Is(err, errNoEntry):
			return err
		}
		a, err := loadAccount(ctx, tx, e.Account)
		if err != nil {
			return err
		}
		if e.BalanceAfter, err = applyEntry(a, e); err != nil {
			return err
		}
		if err := execOne(ctx, tx, `UPDATE accounts SET balance = ? WHERE id = ?`, e.BalanceAfter, e.Account); err != nil {
			return fmt.Errorf("apply to %s: %w", e.Account, err)
		}
		err = tx.QueryRowContext(ctx, `INSERT INTO entries (entry_id, seq, kind, account_id, amount, currency, actor, reason, balance_after, created_at)
			VALUES (?, (SELECT coalesce(max(seq), 0) + 1 FROM entries), ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`,
			e.ID, string(e.Kind), e.Account, e.Amount, e.Currency, e.Actor, e.Reason, e.BalanceAfter, e.CreatedAt.UnixNano()).Scan(&e.seq)
		if err != nil {
			return fmt.Errorf("journal: %w", err)
		}
		out = e
		return nil
	})
	if err != nil {
		return Entry{}, false, l.accountError("post entry "+e.ID, e.Account, err)
	}
	return out, replayed, nil
}

// reusedEntryError is the refusal of an entry id journaled before as stored.
func reusedEntryError(stored Entry) error {
	return fmt.Errorf("%w: entry %s is a %s of %s on account %s", ErrEntryIDReused, stored.ID,
		entryKindWord(stored.Kind), money.Format(stored.Amount, stored.Currency), stored.Account)
}

func entryKindWord(k EntryKind) string {
	if k == Withdrawal {
		return "withdrawal"
	}
	return "deposit"
}

func loadEntry(ctx context.Context, q querier, id string) (Entry, error) {
	e, err := scanEntry(q.QueryRowContext(ctx, `SELECT `+entryColumns+` FROM entries WHERE entry_id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Entry{}, errNoEntry
	}
	if err != nil {
		return Entry{}, fmt.Errorf("load entry %s: %w", id, err)
	}
	return e, nil
}

// ListEntries returns up to pageSize entries of the journal, newest first, only account
// accountID's when it is not empty (none for an account without entries, or unknown), starting
// after the position encoded in pageToken ("" for the first page), and the token of the next
// page ("" after the last one). A malformed token is ErrInvalidPageToken.
func (l *Ledger) ListEntries(ctx context.Context, accountID string, pageSize int, pageToken string) ([]Entry, string, error) {
	before, err := checkListEntries(accountID, pageSize, pageToken)
	if err != nil {
		return nil, "", err
	}
	var rows *sql.Rows
	if accountID == "" {
		rows, err = l.db.Read.QueryContext(ctx, `SELECT `+entryColumns+` FROM entries WHERE seq < ? ORDER BY seq DESC LIMIT ?`, before, pageSize+1)
	} else {
		rows, err = l.db.Read.QueryContext(ctx, `SELECT `+entryColumns+` FROM entries WHERE account_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?`,
			accountID, before, pageSize+1)
	}
	if err != nil {
		return nil, "", fmt.Errorf("list entries: %w", err)
	}
	defer rows.Close()
	return entryPage(rows, pageSize)
}

// Summary returns the ledger's totals, read in one snapshot.
func (l *Ledger) Summary(ctx context.Context) (Summary, error) {
	tx, err := l.db.Read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return Summary{}, fmt.Errorf("ledger summary: %w", err)
	}
	defer tx.Rollback()
	var s Summary
	var initial string
	err = tx.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(balance), 0), coalesce(sum(held), 0), coalesce(sum(pending_credit), 0) FROM accounts`).
		Scan(&s.Accounts, &s.Balance, &s.Held, &s.PendingCredit)
	if err == nil {
		err = tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'initial'`).Scan(&initial)
	}
	if err == nil {
		s.Initial, err = parseInitial(initial)
	}
	if err == nil {
		err = tx.QueryRowContext(ctx, `SELECT coalesce(sum(CASE WHEN kind = 'DEPOSIT' THEN amount END), 0),
			coalesce(sum(CASE WHEN kind = 'WITHDRAWAL' THEN amount END), 0) FROM entries`).Scan(&s.Deposited, &s.Withdrawn)
	}
	if err == nil {
		err = tx.QueryRowContext(ctx, `SELECT count(*) FROM transactions WHERE state = 'PREPARED'`).Scan(&s.Prepared)
	}
	if err != nil {
		return Summary{}, fmt.Errorf("ledger summary: %w", err)
	}
	return s, nil
}
