package bank

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/internal/rpcerr"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestService(t *testing.T, accounts ...Account) (*Service, *Ledger, *syncBuffer) {
	t.Helper()
	l, _ := openTestLedger(t, accounts...)
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	return NewService("bank1", l, logger, WithClock(func() time.Time { return t0 })), l, logs
}

func prepareRequest(txn string, dl time.Time, legs ...*bankv1.Leg) *connect.Request[bankv1.PrepareTransactionRequest] {
	return connect.NewRequest(&bankv1.PrepareTransactionRequest{TransactionId: txn, Legs: legs, Deadline: timestamppb.New(dl)})
}

func pbLeg(id string, d bankv1.LegDirection, amount int64) *bankv1.Leg {
	return &bankv1.Leg{AccountId: id, Direction: d, Amount: amount, Currency: "USD"}
}

const (
	pbDebit  = bankv1.LegDirection_LEG_DIRECTION_DEBIT
	pbCredit = bankv1.LegDirection_LEG_DIRECTION_CREDIT
)

// wantError checks a Connect error's code and reason.
func wantError(t *testing.T, err error, code connect.Code, reason string) {
	t.Helper()
	if connect.CodeOf(err) != code || rpcerr.Reason(err) != reason {
		t.Fatalf("err = %v (code %v, reason %q); want %v %q", err, connect.CodeOf(err), rpcerr.Reason(err), code, reason)
	}
}

func TestServicePrepareVotes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newTestService(t, usd("bank1-1", 1000), usd("bank1-2", 0))

	res, err := s.PrepareTransaction(ctx, prepareRequest("yes", deadline, pbLeg("bank1-1", pbDebit, 400), pbLeg("bank1-2", pbCredit, 400)))
	if err != nil || res.Msg.GetVote() != bankv1.Vote_VOTE_YES {
		t.Fatalf("prepare = %v, %v; want YES", res, err)
	}
	// A NO vote is a response, not an RPC error.
	res, err = s.PrepareTransaction(ctx, prepareRequest("no", deadline, pbLeg("bank1-1", pbDebit, 601)))
	if err != nil {
		t.Fatalf("prepare: %v; want a NO vote", err)
	}
	if res.Msg.GetVote() != bankv1.Vote_VOTE_NO || res.Msg.GetReason() != bankv1.VoteReason_VOTE_REASON_INSUFFICIENT_FUNDS ||
		!strings.Contains(res.Msg.GetMessage(), "bank1-1") {
		t.Fatalf("prepare = %v; want NO insufficient funds naming the account", res.Msg)
	}
	// The service's clock decides lateness.
	res, err = s.PrepareTransaction(ctx, prepareRequest("late", t0.Add(-time.Second), pbLeg("bank1-2", pbCredit, 1)))
	if err != nil || res.Msg.GetReason() != bankv1.VoteReason_VOTE_REASON_DEADLINE_EXCEEDED {
		t.Fatalf("late prepare = %v, %v; want NO deadline exceeded", res, err)
	}

	_, err = s.PrepareTransaction(ctx, prepareRequest("bad", deadline, pbLeg("bank1-1", bankv1.LegDirection_LEG_DIRECTION_UNSPECIFIED, 1)))
	wantError(t, err, connect.CodeInvalidArgument, ErrorReasonInvalidArgument)
	_, err = s.PrepareTransaction(ctx, connect.NewRequest(&bankv1.PrepareTransactionRequest{TransactionId: "nodl", Legs: []*bankv1.Leg{pbLeg("bank1-1", pbDebit, 1)}}))
	wantError(t, err, connect.CodeInvalidArgument, ErrorReasonInvalidArgument)

	commit, err := s.CommitTransaction(ctx, connect.NewRequest(&bankv1.CommitTransactionRequest{TransactionId: "yes"}))
	if err != nil || commit.Msg.GetState() != bankv1.TransactionState_TRANSACTION_STATE_COMMITTED {
		t.Fatalf("commit = %v, %v", commit, err)
	}
	bal, err := s.FetchBankBalance(ctx, connect.NewRequest(&bankv1.FetchBankBalanceRequest{AccountIds: []string{"bank1-2", "bank1-1"}}))
	if err != nil {
		t.Fatal(err)
	}
	if b := bal.Msg.GetBalances(); len(b) != 2 || b[0].GetBalance() != 400 || b[1].GetBalance() != 600 || b[1].GetAvailable() != 600 {
		t.Fatalf("balances = %v", b)
	}

	tx, err := s.GetTransaction(ctx, connect.NewRequest(&bankv1.GetTransactionRequest{TransactionId: "no"}))
	if err != nil || tx.Msg.GetTransaction().GetState() != bankv1.TransactionState_TRANSACTION_STATE_ABORTED ||
		tx.Msg.GetTransaction().GetReason() != bankv1.VoteReason_VOTE_REASON_INSUFFICIENT_FUNDS {
		t.Fatalf("get transaction = %v, %v", tx, err)
	}
}

func TestServicePhaseTwoViolations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, logs := newTestService(t, usd("bank1-1", 1000))

	if _, err := s.PrepareTransaction(ctx, prepareRequest("c", deadline, pbLeg("bank1-1", pbDebit, 1))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CommitTransaction(ctx, connect.NewRequest(&bankv1.CommitTransactionRequest{TransactionId: "c"})); err != nil {
		t.Fatal(err)
	}
	ab, err := s.AbortTransaction(ctx, connect.NewRequest(&bankv1.AbortTransactionRequest{TransactionId: "a"}))
	if err != nil || ab.Msg.GetState() != bankv1.TransactionState_TRANSACTION_STATE_ABORTED {
		t.Fatalf("abort of an unknown txn = %v, %v; want ABORTED", ab, err)
	}

	tests := []struct {
		name   string
		call   func() error
		code   connect.Code
		reason string
		txn    string
	}{
		{"commit after abort", func() error {
			_, err := s.CommitTransaction(ctx, connect.NewRequest(&bankv1.CommitTransactionRequest{TransactionId: "a"}))
			return err
		}, connect.CodeFailedPrecondition, ErrorReasonTransactionAlreadyAborted, "txn=a"},
		{"abort after commit", func() error {
			_, err := s.AbortTransaction(ctx, connect.NewRequest(&bankv1.AbortTransactionRequest{TransactionId: "c"}))
			return err
		}, connect.CodeFailedPrecondition, ErrorReasonTransactionAlreadyCommitted, "txn=c"},
		{"commit of an unknown txn", func() error {
			_, err := s.CommitTransaction(ctx, connect.NewRequest(&bankv1.CommitTransactionRequest{TransactionId: "ghost"}))
			return err
		}, connect.CodeNotFound, ErrorReasonTransactionNotFound, "txn=ghost"},
	}
	for _, tt := range tests {
		wantError(t, tt.call(), tt.code, tt.reason)
		found := false
		for line := range strings.Lines(logs.String()) {
			if strings.Contains(line, "level=ERROR") && strings.Contains(line, tt.txn) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no ERROR log line naming %s in:\n%s", tt.name, tt.txn, logs)
		}
	}
}

func TestServiceNotFound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newTestService(t, usd("bank1-1", 1000))
	for _, id := range []string{"bank1-404", "bank2-1"} {
		_, err := s.GetAccount(ctx, connect.NewRequest(&bankv1.GetAccountRequest{AccountId: id}))
		wantError(t, err, connect.CodeNotFound, ErrorReasonAccountNotFound)
		if !strings.Contains(err.Error(), id) {
			t.Fatalf("error %q does not name %s", err, id)
		}
		_, err = s.FetchBankBalance(ctx, connect.NewRequest(&bankv1.FetchBankBalanceRequest{AccountIds: []string{"bank1-1", id}}))
		wantError(t, err, connect.CodeNotFound, ErrorReasonAccountNotFound)
	}
	_, err := s.GetTransaction(ctx, connect.NewRequest(&bankv1.GetTransactionRequest{TransactionId: "nope"}))
	wantError(t, err, connect.CodeNotFound, ErrorReasonTransactionNotFound)

	acct, err := s.GetAccount(ctx, connect.NewRequest(&bankv1.GetAccountRequest{AccountId: "bank1-1"}))
	if err != nil || acct.Msg.GetAccount().GetBalance().GetAvailable() != 1000 || acct.Msg.GetAccount().GetCurrency() != "USD" {
		t.Fatalf("get account = %v, %v", acct, err)
	}
}

func TestServiceListAccounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newTestService(t, usd("bank1-1", 1), usd("bank1-2", 2), usd("bank1-3", 3))
	res, err := s.ListAccounts(ctx, connect.NewRequest(&bankv1.ListAccountsRequest{PageSize: 2}))
	if err != nil || len(res.Msg.GetAccounts()) != 2 || res.Msg.GetNextPageToken() == "" {
		t.Fatalf("first page = %v, %v", res, err)
	}
	res, err = s.ListAccounts(ctx, connect.NewRequest(&bankv1.ListAccountsRequest{PageToken: res.Msg.GetNextPageToken()}))
	if err != nil || len(res.Msg.GetAccounts()) != 1 || res.Msg.GetAccounts()[0].GetAccountId() != "bank1-3" || res.Msg.GetNextPageToken() != "" {
		t.Fatalf("last page = %v, %v", res, err)
	}
	_, err = s.ListAccounts(ctx, connect.NewRequest(&bankv1.ListAccountsRequest{PageToken: "%%%"}))
	wantError(t, err, connect.CodeInvalidArgument, ErrorReasonInvalidPageToken)
	_, err = s.ListAccounts(ctx, connect.NewRequest(&bankv1.ListAccountsRequest{PageSize: 5000}))
	wantError(t, err, connect.CodeInvalidArgument, ErrorReasonInvalidArgument)
}

func TestServiceContextErrorsPassThrough(t *testing.T) {
	t.Parallel()
	s, _, _ := newTestService(t, usd("bank1-1", 1000))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.CommitTransaction(ctx, connect.NewRequest(&bankv1.CommitTransactionRequest{TransactionId: "x"}))
	if connect.CodeOf(err) != connect.CodeCanceled {
		t.Fatalf("err = %v; want Canceled", err)
	}
	ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	_, err = s.PrepareTransaction(ctx, prepareRequest("y", deadline, pbLeg("bank1-1", pbDebit, 1)))
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("err = %v; want DeadlineExceeded", err)
	}
}

func TestOpenImportsOnFirstStartOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	file := filepath.Join(dir, "accounts.json")
	if err := os.WriteFile(file, []byte(`{"bank1-1234": 1000.0, "bank1-5678": 250.5}`), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cfg := Config{Name: "bank1", DataDir: filepath.Join(dir, "data"), AccountsFile: file, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	b, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	wantAccount(t, b.Ledger, "bank1-5678", 25050, 0, 0)
	if v := mustPrepare(t, b.Ledger.(testLedger), "t", debit("bank1-5678", 50)); !v.Yes {
		t.Fatal(v)
	}
	if err := b.Ledger.Commit(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// On the second start the file is not read: even a broken one does not matter.
	if err := os.WriteFile(file, []byte(`{"bank1-1234": 0.001}`), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err = Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	wantAccount(t, b.Ledger, "bank1-5678", 25000, 0, 0)
	if !strings.Contains(logs.String(), "accounts file not read") {
		t.Fatalf("no log of the skipped import in:\n%s", logs)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "bank1.db")); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesBadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"bank1-1": 1, "bank2-1": 1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no name", Config{DataDir: dir}},
		{"path in name", Config{Name: "../x", DataDir: dir}},
		{"trailing dash", Config{Name: "bank-", DataDir: dir}},
		{"no data dir", Config{Name: "bank1"}},
		{"unknown currency", Config{Name: "bank1", DataDir: dir, Currency: "XYZ"}},
		{"empty ledger, no file", Config{Name: "bank1", DataDir: filepath.Join(dir, "a")}},
		{"foreign account in file", Config{Name: "bank1", DataDir: filepath.Join(dir, "b"), AccountsFile: bad}},
	}
	for _, tt := range tests {
		if b, err := Open(context.Background(), tt.cfg); err == nil {
			b.Close()
			t.Errorf("%s: Open succeeded", tt.name)
		} else if tt.name == "foreign account in file" && !errors.Is(err, ErrInvalidAccounts) {
			t.Errorf("%s: err = %v; want ErrInvalidAccounts", tt.name, err)
		}
	}
}
