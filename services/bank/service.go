package bank

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
	"github.com/paygate/paygate/internal/sqlitedb"
)

// The ErrorInfo reasons of the bank's errors, for callers to branch on.
const (
	ErrorReasonTransactionNotFound         = "transaction_not_found"
	ErrorReasonTransactionAlreadyAborted   = "transaction_already_aborted"
	ErrorReasonTransactionAlreadyCommitted = "transaction_already_committed"
	ErrorReasonAccountNotFound             = "account_not_found"
	ErrorReasonInvalidArgument             = "invalid_argument"
	ErrorReasonInvalidPageToken            = "invalid_page_token"
	ErrorReasonInternal                    = "internal"
	ErrorReasonRequestIDReused             = "request_id_reused"
	ErrorReasonEntryIDReused               = "entry_id_reused"
	ErrorReasonInsufficientFunds           = "insufficient_funds"
	ErrorReasonBalanceOverflow             = "balance_overflow"
	ErrorReasonAccountClosed               = "account_closed"
	ErrorReasonCurrencyMismatch            = "currency_mismatch"
	ErrorReasonAccountNotEmpty             = "account_not_empty"
)

// Page sizes of ListAccounts and ListEntries.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// ledgerStore is what the service needs of a ledger; *Ledger and *PGLedger provide it.
type ledgerStore interface {
	PrepareItem(ctx context.Context, it PrepareItem, now time.Time) (Vote, error)
	Commit(ctx context.Context, txnID string) error
	Abort(ctx context.Context, txnID string) error
	Batch(ctx context.Context, completions []Completion, prepares []PrepareItem, now time.Time) ([]error, []Vote, []error, error)
	Balances(ctx context.Context, ids []string) ([]Account, error)
	Account(ctx context.Context, id string) (Account, error)
	ListAccounts(ctx context.Context, pageSize int, pageToken string) ([]Account, string, error)
	Transaction(ctx context.Context, txnID string) (Transaction, error)
	RedeemEnrollmentCode(ctx context.Context, id, code, username string, now time.Time) (Account, error)
	OpenAccount(ctx context.Context, requestID, holder, currency string, now time.Time) (Account, bool, error)
	CloseAccount(ctx context.Context, id string) (Account, error)
	PostEntry(ctx context.Context, e Entry, now time.Time) (Entry, bool, error)
	ListEntries(ctx context.Context, accountID string, pageSize int, pageToken string) ([]Entry, string, error)
	Summary(ctx context.Context) (Summary, error)
}

// Service implements paygate.bank.v1.BankService on a ledger. Authentication and request
// validation (the proto's rules) are the interceptors' business; the service still refuses
// arguments the ledger cannot use.
type Service struct {
	bankv1connect.UnimplementedBankServiceHandler

	name   string
	ledger ledgerStore
	logger *slog.Logger
	now    func() time.Time
}

var _ bankv1connect.BankServiceHandler = (*Service)(nil)

// Option configures a Service.
type Option func(*Service)

// WithClock makes the service read the time from now instead of time.Now; a prepare is compared
// with its deadline at that time.
func WithClock(now func() time.Time) Option {
	return func(s *Service) { s.now = now }
}

// NewService returns the BankService of bank name on ledger. A nil logger discards.
func NewService(name string, ledger LedgerStore, logger *slog.Logger, opts ...Option) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{name: name, ledger: ledger, logger: logger.With("bank", name), now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Vote and state mappings between the ledger and the API.
var (
	directionFromProto = map[bankv1.LegDirection]Direction{
		bankv1.LegDirection_LEG_DIRECTION_DEBIT:  Debit,
		bankv1.LegDirection_LEG_DIRECTION_CREDIT: Credit,
	}
	directionToProto = map[Direction]bankv1.LegDirection{
		Debit:  bankv1.LegDirection_LEG_DIRECTION_DEBIT,
		Credit: bankv1.LegDirection_LEG_DIRECTION_CREDIT,
	}
	reasonToProto = map[Reason]bankv1.VoteReason{
		ReasonNone:              bankv1.VoteReason_VOTE_REASON_UNSPECIFIED,
		ReasonInsufficientFunds: bankv1.VoteReason_VOTE_REASON_INSUFFICIENT_FUNDS,
		ReasonUnknownAccount:    bankv1.VoteReason_VOTE_REASON_UNKNOWN_ACCOUNT,
		ReasonCurrencyMismatch:  bankv1.VoteReason_VOTE_REASON_CURRENCY_MISMATCH,
		ReasonAccountClosed:     bankv1.VoteReason_VOTE_REASON_ACCOUNT_CLOSED,
		ReasonDeadlineExceeded:  bankv1.VoteReason_VOTE_REASON_DEADLINE_EXCEEDED,
		ReasonAlreadyAborted:    bankv1.VoteReason_VOTE_REASON_ALREADY_ABORTED,
		ReasonConflict:          bankv1.VoteReason_VOTE_REASON_CONFLICT,
		ReasonBalanceOverflow:   bankv1.VoteReason_VOTE_REASON_BALANCE_OVERFLOW,
	}
	stateToProto = map[State]bankv1.TransactionState{
		Prepared:  bankv1.TransactionState_TRANSACTION_STATE_PREPARED,
		Committed: bankv1.TransactionState_TRANSACTION_STATE_COMMITTED,
		Aborted:   bankv1.TransactionState_TRANSACTION_STATE_ABORTED,
	}
)

// errorCodes maps the ledger's errors to Connect codes and reasons at the RPC boundary. The first
// entry that matches wins.
var errorCodes = []struct {
	err    error
	code   connect.Code
	reason string
	// detail: the message is only what the error says after the sentinel's own text (which
	// names the field or account and the figures), not the action and ids wrapped around it.
	detail bool
}{
	{ErrUnknownTransaction, connect.CodeNotFound, ErrorReasonTransactionNotFound, false},
	{ErrAlreadyAborted, connect.CodeFailedPrecondition, ErrorReasonTransactionAlreadyAborted, false},
	{ErrAlreadyCommitted, connect.CodeFailedPrecondition, ErrorReasonTransactionAlreadyCommitted, false},
	{ErrUnknownAccount, connect.CodeNotFound, ErrorReasonAccountNotFound, false},
	{ErrInvalidPageToken, connect.CodeInvalidArgument, ErrorReasonInvalidPageToken, false},
	{ErrInvalidArgument, connect.CodeInvalidArgument, ErrorReasonInvalidArgument, false},
	{ErrEnrollmentRefused, connect.CodePermissionDenied, ErrorReasonEnrollmentRefused, false},
	{ErrRequestIDReused, connect.CodeAlreadyExists, ErrorReasonRequestIDReused, true},
	{ErrEntryIDReused, connect.CodeAlreadyExists, ErrorReasonEntryIDReused, true},
	{ErrInsufficientFunds, connect.CodeFailedPrecondition, ErrorReasonInsufficientFunds, true},
	{ErrBalanceOverflow, connect.CodeFailedPrecondition, ErrorReasonBalanceOverflow, true},
	{ErrAccountClosed, connect.CodeFailedPrecondition, ErrorReasonAccountClosed, true},
	{ErrCurrencyMismatch, connect.CodeFailedPrecondition, ErrorReasonCurrencyMismatch, true},
	{ErrAccountNotEmpty, connect.CodeFailedPrecondition, ErrorReasonAccountNotEmpty, true},
}

// toConnectError turns an error of the ledger into the RPC's error. Context errors pass through
// as Canceled or DeadlineExceeded; errors not in the table are logged and answered Internal
// without their details.
func (s *Service) toConnectError(ctx context.Context, err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	for _, e := range errorCodes {
		if errors.Is(err, e.err) {
			msg := err.Error()
			if e.detail {
				if _, after, ok := strings.Cut(msg, e.err.Error()+": "); ok {
					msg = after
				}
			}
			return rpcerr.New(e.code, e.reason, msg)
		}
	}
	if cerr := ctx.Err(); cerr != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		if cerr == nil {
			cerr = err
		}
		code := connect.CodeCanceled
		if errors.Is(cerr, context.DeadlineExceeded) {
			code = connect.CodeDeadlineExceeded
		}
		return connect.NewError(code, cerr)
	}
	if sqlitedb.Unavailable(err) || pgUnavailable(err) {
		// A full disk, an I/O error, the ledger closing at shutdown: the caller may retry.
		s.logger.ErrorContext(ctx, "ledger unavailable", "err", err)
		return rpcerr.New(connect.CodeUnavailable, rpcserver.ReasonStorageUnavailable, "the bank's ledger is unavailable; retry later")
	}
	s.logger.ErrorContext(ctx, "ledger failure", "err", err)
	return rpcerr.New(connect.CodeInternal, ErrorReasonInternal, "internal error in the bank's ledger")
}

func invalidArgument(format string, args ...any) error {
	return rpcerr.Newf(connect.CodeInvalidArgument, ErrorReasonInvalidArgument, format, args...)
}

// PrepareTransaction implements phase one. A NO vote is an answer, not an RPC error.
func (s *Service) PrepareTransaction(ctx context.Context, req *connect.Request[bankv1.PrepareTransactionRequest]) (*connect.Response[bankv1.PrepareTransactionResponse], error) {
	item, err := prepareItemFromProto(req.Msg)
	if err != nil {
		return nil, err
	}
	vote, err := s.ledger.PrepareItem(ctx, item, s.now())
	if err != nil {
		return nil, s.toConnectError(ctx, err)
	}
	return connect.NewResponse(s.voteResponse(ctx, item.TxnID, vote)), nil
}

// prepareItemFromProto converts a prepare request into the ledger's arguments, or returns the
// RPC's InvalidArgument error.
func prepareItemFromProto(m *bankv1.PrepareTransactionRequest) (PrepareItem, error) {
	if err := m.GetDeadline().CheckValid(); err != nil {
		return PrepareItem{}, invalidArgument("deadline: %v", err)
	}
	legs := make([]Leg, 0, len(m.GetLegs()))
	for i, g := range m.GetLegs() {
		d, ok := directionFromProto[g.GetDirection()]
		if !ok {
			return PrepareItem{}, invalidArgument("leg %d: direction %v", i+1, g.GetDirection())
		}
		legs = append(legs, Leg{Account: g.GetAccountId(), Direction: d, Amount: g.GetAmount(), Currency: g.GetCurrency()})
	}
	return PrepareItem{TxnID: m.GetTransactionId(), Legs: legs, Deadline: m.GetDeadline().AsTime(), DecisionProof: m.GetDecisionProof()}, nil
}

// voteResponse is the response carrying the ledger's vote on transaction txnID; a NO vote is
// logged.
func (s *Service) voteResponse(ctx context.Context, txnID string, vote Vote) *bankv1.PrepareTransactionResponse {
	if vote.Yes {
		return &bankv1.PrepareTransactionResponse{Vote: bankv1.Vote_VOTE_YES}
	}
	s.logger.InfoContext(ctx, "voted no", "txn", txnID, "reason", vote.Reason, "message", vote.Message)
	return &bankv1.PrepareTransactionResponse{Vote: bankv1.Vote_VOTE_NO, Reason: reasonToProto[vote.Reason], Message: vote.Message}
}

// CommitTransaction implements phase two's commit.
func (s *Service) CommitTransaction(ctx context.Context, req *connect.Request[bankv1.CommitTransactionRequest]) (*connect.Response[bankv1.CommitTransactionResponse], error) {
	id := req.Msg.GetTransactionId()
	if err := s.ledger.Commit(ctx, id); err != nil {
		return nil, s.completionError(ctx, Committed, id, err)
	}
	return connect.NewResponse(&bankv1.CommitTransactionResponse{State: stateToProto[Committed]}), nil
}

// AbortTransaction implements phase two's abort.
func (s *Service) AbortTransaction(ctx context.Context, req *connect.Request[bankv1.AbortTransactionRequest]) (*connect.Response[bankv1.AbortTransactionResponse], error) {
	id := req.Msg.GetTransactionId()
	if err := s.ledger.Abort(ctx, id); err != nil {
		return nil, s.completionError(ctx, Aborted, id, err)
	}
	return connect.NewResponse(&bankv1.AbortTransactionResponse{State: stateToProto[Aborted]}), nil
}

// completionError is the RPC's error for the ledger's error err on the commit (outcome
// Committed) or abort (Aborted) of transaction txnID; a protocol violation is logged.
func (s *Service) completionError(ctx context.Context, outcome State, txnID string, err error) error {
	action := "commit"
	if outcome == Aborted {
		action = "abort"
	}
	s.logViolation(ctx, action, txnID, err)
	return s.toConnectError(ctx, err)
}

// logViolation logs at ERROR the phase-two calls that break the protocol: a commit of an aborted
// or of an unknown transaction, an abort of a committed one.
func (s *Service) logViolation(ctx context.Context, action, txnID string, err error) {
	if errors.Is(err, ErrAlreadyAborted) || errors.Is(err, ErrAlreadyCommitted) || (action == "commit" && errors.Is(err, ErrUnknownTransaction)) {
		s.logger.ErrorContext(ctx, "two-phase commit invariant violation: refused "+action, "txn", txnID, "err", err)
	}
}

// FetchBankBalance returns the balances of the named accounts.
func (s *Service) FetchBankBalance(ctx context.Context, req *connect.Request[bankv1.FetchBankBalanceRequest]) (*connect.Response[bankv1.FetchBankBalanceResponse], error) {
	accounts, err := s.ledger.Balances(ctx, req.Msg.GetAccountIds())
	if err != nil {
		return nil, s.toConnectError(ctx, err)
	}
	res := &bankv1.FetchBankBalanceResponse{Balances: make([]*bankv1.AccountBalance, 0, len(accounts))}
	for _, a := range accounts {
		res.Balances = append(res.Balances, balanceToProto(a))
	}
	return connect.NewResponse(res), nil
}

// GetAccount returns one account.
func (s *Service) GetAccount(ctx context.Context, req *connect.Request[bankv1.GetAccountRequest]) (*connect.Response[bankv1.GetAccountResponse], error) {
	a, err := s.ledger.Account(ctx, req.Msg.GetAccountId())
	if err != nil {
		return nil, s.toConnectError(ctx, err)
	}
	return connect.NewResponse(&bankv1.GetAccountResponse{Account: accountToProto(a)}), nil
}

// pageSize is the page size a list request asks for: DefaultPageSize for 0, or the RPC's
// InvalidArgument error.
func pageSize(size int32) (int, error) {
	switch {
	case size == 0:
		return DefaultPageSize, nil
	case size < 0 || size > MaxPageSize:
		return 0, invalidArgument("page_size must be between 0 and %d, got %d", MaxPageSize, size)
	}
	return int(size), nil
}

// ListAccounts pages through the bank's accounts in id order.
func (s *Service) ListAccounts(ctx context.Context, req *connect.Request[bankv1.ListAccountsRequest]) (*connect.Response[bankv1.ListAccountsResponse], error) {
	size, err := pageSize(req.Msg.GetPageSize())
	if err != nil {
		return nil, err
	}
	accounts, next, err := s.ledger.ListAccounts(ctx, size, req.Msg.GetPageToken())
	if err != nil {
		return nil, s.toConnectError(ctx, err)
	}
	res := &bankv1.ListAccountsResponse{Accounts: make([]*bankv1.Account, 0, len(accounts)), NextPageToken: next}
	for _, a := range accounts {
		res.Accounts = append(res.Accounts, accountToProto(a))
	}
	return connect.NewResponse(res), nil
}

// GetTransaction returns the bank's record of one transaction.
func (s *Service) GetTransaction(ctx context.Context, req *connect.Request[bankv1.GetTransactionRequest]) (*connect.Response[bankv1.GetTransactionResponse], error) {
	t, err := s.ledger.Transaction(ctx, req.Msg.GetTransactionId())
	if err != nil {
		return nil, s.toConnectError(ctx, err)
	}
	pt := &bankv1.Transaction{TransactionId: t.ID, State: stateToProto[t.State], Reason: reasonToProto[t.Reason]}
	if !t.Deadline.IsZero() {
		pt.Deadline = timestamppb.New(t.Deadline)
	}
	for _, g := range t.Legs {
		pt.Legs = append(pt.Legs, &bankv1.Leg{AccountId: g.Account, Direction: directionToProto[g.Direction], Amount: g.Amount, Currency: g.Currency})
	}
	return connect.NewResponse(&bankv1.GetTransactionResponse{Transaction: pt}), nil
}

// RedeemEnrollmentCode checks an account's enrollment code and binds it to the username
// registering with it. Every refusal is PermissionDenied with reason enrollment_refused and the
// same message, whatever the cause; the cause is logged here, the code never is.
func (s *Service) RedeemEnrollmentCode(ctx context.Context, req *connect.Request[bankv1.RedeemEnrollmentCodeRequest]) (*connect.Response[bankv1.RedeemEnrollmentCodeResponse], error) {
	m := req.Msg
	a, err := s.ledger.RedeemEnrollmentCode(ctx, m.GetAccountId(), m.GetCode(), m.GetUsername(), s.now())
	if cause := EnrollmentRefusalCause(err); cause != "" {
		s.logger.InfoContext(ctx, "enrollment code refused", "account", m.GetAccountId(), "username", m.GetUsername(), "cause", cause)
	}
	if err != nil {
		return nil, s.toConnectError(ctx, err)
	}
	s.logger.InfoContext(ctx, "enrollment code redeemed", "account", a.ID, "username", m.GetUsername())
	return connect.NewResponse(&bankv1.RedeemEnrollmentCodeResponse{Account: accountToProto(a)}), nil
}

func balanceToProto(a Account) *bankv1.AccountBalance {
	return &bankv1.AccountBalance{
		AccountId:     a.ID,
		Currency:      a.Currency,
		Balance:       a.Balance,
		Held:          a.Held,
		Available:     a.Available(),
		PendingCredit: a.PendingCredit,
	}
}

func accountToProto(a Account) *bankv1.Account {
	return &bankv1.Account{AccountId: a.ID, Holder: a.Holder, Currency: a.Currency, Closed: a.Closed, Balance: balanceToProto(a)}
}
