package bank

import (
	"context"
	"math"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/internal/money"
)

// The operators' procedures of BankService: accounts opened and closed, the journal of deposits
// and withdrawals, and the ledger's summary. The gateway calls them for its admins.

var (
	entryKindFromProto = map[bankv1.EntryKind]EntryKind{
		bankv1.EntryKind_ENTRY_KIND_DEPOSIT:    Deposit,
		bankv1.EntryKind_ENTRY_KIND_WITHDRAWAL: Withdrawal,
	}
	entryKindToProto = map[EntryKind]bankv1.EntryKind{
		Deposit:    bankv1.EntryKind_ENTRY_KIND_DEPOSIT,
		Withdrawal: bankv1.EntryKind_ENTRY_KIND_WITHDRAWAL,
	}
)

// OpenAccount opens an account with a zero balance; a replayed request_id returns the account
// it opened.
func (s *Service) OpenAccount(ctx context.Context, req *connect.Request[bankv1.OpenAccountRequest]) (*connect.Response[bankv1.OpenAccountResponse], error) {
	m := req.Msg
	a, replayed, err := s.ledger.OpenAccount(ctx, m.GetRequestId(), m.GetHolder(), m.GetCurrency(), s.now())
	if err != nil {
		return nil, s.toConnectError(ctx, err)
	}
	if !replayed {
		s.logger.InfoContext(ctx, "account opened", "account", a.ID, "holder", a.Holder, "currency", a.Currency, "request_id", m.GetRequestId())
	}
	return connect.NewResponse(&bankv1.OpenAccountResponse{Account: accountToProto(a), Replayed: replayed}), nil
}

// CloseAccount closes an empty account.
func (s *Service) CloseAccount(ctx context.Context, req *connect.Request[bankv1.CloseAccountRequest]) (*connect.Response[bankv1.CloseAccountResponse], error) {
	a, err := s.ledger.CloseAccount(ctx, req.Msg.GetAccountId())
	if err != nil {
		return nil, s.toConnectError(ctx, err)
	}
	s.logger.InfoContext(ctx, "account closed", "account", a.ID)
	return connect.NewResponse(&bankv1.CloseAccountResponse{Account: accountToProto(a)}), nil
}

// PostEntry journals a deposit or a withdrawal and applies it to the account's balance.
func (s *Service) PostEntry(ctx context.Context, req *connect.Request[bankv1.PostEntryRequest]) (*connect.Response[bankv1.PostEntryResponse], error) {
	m := req.Msg
	kind, ok := entryKindFromProto[m.GetKind()]
	if !ok {
		return nil, invalidArgument("kind: %v is not a deposit or a withdrawal", m.GetKind())
	}
	e := Entry{ID: m.GetEntryId(), Kind: kind, Account: m.GetAccountId(), Amount: m.GetAmount(), Currency: m.GetCurrency(),
		Actor: m.GetActor(), Reason: m.GetReason()}
	stored, replayed, err := s.ledger.PostEntry(ctx, e, s.now())
	if err != nil {
		return nil, s.toConnectError(ctx, err)
	}
	if !replayed {
		s.logger.InfoContext(ctx, "entry posted", "entry_id", stored.ID, "kind", stored.Kind, "account", stored.Account,
			"amount", money.Format(stored.Amount, stored.Currency), "actor", stored.Actor)
	}
	return connect.NewResponse(&bankv1.PostEntryResponse{Entry: entryToProto(stored), Replayed: replayed}), nil
}

// ListEntries pages through the journal, newest first.
func (s *Service) ListEntries(ctx context.Context, req *connect.Request[bankv1.ListEntriesRequest]) (*connect.Response[bankv1.ListEntriesResponse], error) {
	size, err := pageSize(req.Msg.GetPageSize())
	if err != nil {
		return nil, err
	}
	entries, next, err := s.ledger.ListEntries(ctx, req.Msg.GetAccountId(), size, req.Msg.GetPageToken())
	if err != nil {
		return nil, s.toConnectError(ctx, err)
	}
	res := &bankv1.ListEntriesResponse{Entries: make([]*bankv1.Entry, 0, len(entries)), NextPageToken: next}
	for _, e := range entries {
		res.Entries = append(res.Entries, entryToProto(e))
	}
	return connect.NewResponse(res), nil
}

// GetLedgerSummary returns the ledger's totals, read in one snapshot.
func (s *Service) GetLedgerSummary(ctx context.Context, _ *connect.Request[bankv1.GetLedgerSummaryRequest]) (*connect.Response[bankv1.GetLedgerSummaryResponse], error) {
	sum, err := s.ledger.Summary(ctx)
	if err != nil {
		return nil, s.toConnectError(ctx, err)
	}
	return connect.NewResponse(&bankv1.GetLedgerSummaryResponse{
		Accounts:             clampInt32(sum.Accounts),
		Balance:              sum.Balance,
		Held:                 sum.Held,
		PendingCredit:        sum.PendingCredit,
		Initial:              sum.Initial,
		Deposited:            sum.Deposited,
		Withdrawn:            sum.Withdrawn,
		PreparedTransactions: clampInt32(sum.Prepared),
	}), nil
}

// clampInt32 is n as an int32, math.MaxInt32 for more.
func clampInt32(n int) int32 {
	return int32(min(n, math.MaxInt32))
}

func entryToProto(e Entry) *bankv1.Entry {
	return &bankv1.Entry{
		EntryId:      e.ID,
		Kind:         entryKindToProto[e.Kind],
		AccountId:    e.Account,
		Amount:       e.Amount,
		Currency:     e.Currency,
		Actor:        e.Actor,
		Reason:       e.Reason,
		BalanceAfter: e.BalanceAfter,
		CreateTime:   timestamppb.New(e.CreatedAt),
	}
}
