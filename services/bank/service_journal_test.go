package bank

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
)

// newBankClients serves s's BankService in process over HTTP/2 and TLS, and returns a client of
// it for each protocol the gateway may speak: Connect and gRPC. The server stops at the end of
// the test.
func newBankClients(t *testing.T, s *Service) map[string]bankv1connect.BankServiceClient {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(bankv1connect.NewBankServiceHandler(s))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return map[string]bankv1connect.BankServiceClient{
		"connect": bankv1connect.NewBankServiceClient(srv.Client(), srv.URL),
		"grpc":    bankv1connect.NewBankServiceClient(srv.Client(), srv.URL, connect.WithGRPC()),
	}
}

func postRequest(id string, kind bankv1.EntryKind, account string, amount int64) *connect.Request[bankv1.PostEntryRequest] {
	return connect.NewRequest(&bankv1.PostEntryRequest{EntryId: id, Kind: kind, AccountId: account, Amount: amount,
		Currency: "USD", Actor: "root", Reason: "test"})
}

const (
	pbDeposit    = bankv1.EntryKind_ENTRY_KIND_DEPOSIT
	pbWithdrawal = bankv1.EntryKind_ENTRY_KIND_WITHDRAWAL
)

// The operators' procedures answer through the handler, on both protocols, with their results
// and with the code and reason of each refusal, naming what was refused.
func TestServiceJournalThroughHandler(t *testing.T) {
	t.Parallel()
	closed := usd("bank1-2", 0)
	closed.Closed = true
	eur := Account{ID: "bank1-3", Currency: "EUR"}
	const big = math.MaxInt64 - 2000
	for _, proto := range []string{"connect", "grpc"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s, _, _ := newTestService(t, usd("bank1-1", 1000), closed, eur, usd("bank1-big", big))
			c := newBankClients(t, s)[proto]

			// Results.
			res, err := c.PostEntry(ctx, postRequest("d1", pbDeposit, "bank1-1", 250))
			if err != nil || res.Msg.GetReplayed() || res.Msg.GetEntry().GetBalanceAfter() != 1250 ||
				!res.Msg.GetEntry().GetCreateTime().AsTime().Equal(t0) || res.Msg.GetEntry().GetKind() != pbDeposit {
				t.Fatalf("deposit = %v, %v", res, err)
			}
			res, err = c.PostEntry(ctx, postRequest("d1", pbDeposit, "bank1-1", 250))
			if err != nil || !res.Msg.GetReplayed() || res.Msg.GetEntry().GetBalanceAfter() != 1250 {
				t.Fatalf("replayed deposit = %v, %v", res, err)
			}
			if _, err := c.PostEntry(ctx, postRequest("w1", pbWithdrawal, "bank1-1", 50)); err != nil {
				t.Fatal(err)
			}
			open, err := c.OpenAccount(ctx, connect.NewRequest(&bankv1.OpenAccountRequest{RequestId: "r1", Holder: "dora", Currency: "USD"}))
			if a := open.Msg.GetAccount(); err != nil || open.Msg.GetReplayed() || a.GetAccountId() != "bank1-4" || a.GetHolder() != "dora" ||
				a.GetBalance().GetBalance() != 0 || a.GetClosed() {
				t.Fatalf("open = %v, %v", open, err)
			}
			cl, err := c.CloseAccount(ctx, connect.NewRequest(&bankv1.CloseAccountRequest{AccountId: "bank1-4"}))
			if err != nil || !cl.Msg.GetAccount().GetClosed() {
				t.Fatalf("close = %v, %v", cl, err)
			}
			list, err := c.ListEntries(ctx, connect.NewRequest(&bankv1.ListEntriesRequest{PageSize: 1}))
			if err != nil || len(list.Msg.GetEntries()) != 1 || list.Msg.GetEntries()[0].GetEntryId() != "w1" || list.Msg.GetNextPageToken() == "" {
				t.Fatalf("first page = %v, %v", list, err)
			}
			list, err = c.ListEntries(ctx, connect.NewRequest(&bankv1.ListEntriesRequest{AccountId: "bank1-1", PageToken: list.Msg.GetNextPageToken()}))
			if err != nil || len(list.Msg.GetEntries()) != 1 || list.Msg.GetEntries()[0].GetEntryId() != "d1" || list.Msg.GetNextPageToken() != "" {
				t.Fatalf("last page = %v, %v", list, err)
			}
			sum, err := c.GetLedgerSummary(ctx, connect.NewRequest(&bankv1.GetLedgerSummaryRequest{}))
			want := &bankv1.GetLedgerSummaryResponse{Accounts: 5, Balance: 1200 + big, Initial: 1000 + big, Deposited: 250, Withdrawn: 50}
			if err != nil || sum.Msg.String() != want.String() {
				t.Fatalf("summary = %v, %v; want %v", sum.Msg, err, want)
			}

			// Refusals.
			tests := []struct {
				name   string
				call   func() error
				code   connect.Code
				reason string
				names  string // what the message must name
			}{
				{"overdraft", func() error {
					_, err := c.PostEntry(ctx, postRequest("w2", pbWithdrawal, "bank1-1", 1201))
					return err
				}, connect.CodeFailedPrecondition, ErrorReasonInsufficientFunds, "bank1-1"},
				{"overflow", func() error {
					_, err := c.PostEntry(ctx, postRequest("d2", pbDeposit, "bank1-big", 2001))
					return err
				}, connect.CodeFailedPrecondition, ErrorReasonBalanceOverflow, "bank1-big"},
				{"closed account", func() error {
					_, err := c.PostEntry(ctx, postRequest("d2", pbDeposit, "bank1-2", 1))
					return err
				}, connect.CodeFailedPrecondition, ErrorReasonAccountClosed, "bank1-2"},
				{"unknown account", func() error {
					_, err := c.PostEntry(ctx, postRequest("d2", pbDeposit, "bank1-404", 1))
					return err
				}, connect.CodeNotFound, ErrorReasonAccountNotFound, "bank1-404"},
				{"currency mismatch", func() error {
					_, err := c.PostEntry(ctx, postRequest("d2", pbDeposit, "bank1-3", 1))
					return err
				}, connect.CodeFailedPrecondition, ErrorReasonCurrencyMismatch, "bank1-3"},
				{"entry id reused", func() error {
					_, err := c.PostEntry(ctx, postRequest("d1", pbDeposit, "bank1-1", 251))
					return err
				}, connect.CodeAlreadyExists, ErrorReasonEntryIDReused, "d1"},
				{"no kind", func() error {
					_, err := c.PostEntry(ctx, postRequest("d2", bankv1.EntryKind_ENTRY_KIND_UNSPECIFIED, "bank1-1", 1))
					return err
				}, connect.CodeInvalidArgument, ErrorReasonInvalidArgument, "kind"},
				{"zero amount", func() error {
					_, err := c.PostEntry(ctx, postRequest("d2", pbDeposit, "bank1-1", 0))
					return err
				}, connect.CodeInvalidArgument, ErrorReasonInvalidArgument, "amount"},
				{"no actor", func() error {
					r := postRequest("d2", pbDeposit, "bank1-1", 1)
					r.Msg.Actor = ""
					_, err := c.PostEntry(ctx, r)
					return err
				}, connect.CodeInvalidArgument, ErrorReasonInvalidArgument, "actor"},
				{"request id reused", func() error {
					_, err := c.OpenAccount(ctx, connect.NewRequest(&bankv1.OpenAccountRequest{RequestId: "r1", Holder: "eve", Currency: "USD"}))
					return err
				}, connect.CodeAlreadyExists, ErrorReasonRequestIDReused, "r1"},
				{"unknown currency", func() error {
					_, err := c.OpenAccount(ctx, connect.NewRequest(&bankv1.OpenAccountRequest{RequestId: "r2", Holder: "eve", Currency: "XYZ"}))
					return err
				}, connect.CodeInvalidArgument, ErrorReasonInvalidArgument, "currency"},
				{"close with a balance", func() error {
					_, err := c.CloseAccount(ctx, connect.NewRequest(&bankv1.CloseAccountRequest{AccountId: "bank1-1"}))
					return err
				}, connect.CodeFailedPrecondition, ErrorReasonAccountNotEmpty, "bank1-1"},
				{"close of an unknown account", func() error {
					_, err := c.CloseAccount(ctx, connect.NewRequest(&bankv1.CloseAccountRequest{AccountId: "bank1-404"}))
					return err
				}, connect.CodeNotFound, ErrorReasonAccountNotFound, "bank1-404"},
				{"bad page token", func() error {
					_, err := c.ListEntries(ctx, connect.NewRequest(&bankv1.ListEntriesRequest{PageToken: "%%%"}))
					return err
				}, connect.CodeInvalidArgument, ErrorReasonInvalidPageToken, "page token"},
				{"page too large", func() error {
					_, err := c.ListEntries(ctx, connect.NewRequest(&bankv1.ListEntriesRequest{PageSize: 5000}))
					return err
				}, connect.CodeInvalidArgument, ErrorReasonInvalidArgument, "page_size"},
			}
			for _, tt := range tests {
				err := tt.call()
				if connect.CodeOf(err) != tt.code || rpcerr.Reason(err) != tt.reason {
					t.Errorf("%s: %v (code %v, reason %q); want %v %q", tt.name, err, connect.CodeOf(err), rpcerr.Reason(err), tt.code, tt.reason)
					continue
				}
				if !strings.Contains(err.Error(), tt.names) {
					t.Errorf("%s: message %q does not name %q", tt.name, err, tt.names)
				}
			}
			// Nothing of the refusals stuck.
			again, err := c.GetLedgerSummary(ctx, connect.NewRequest(&bankv1.GetLedgerSummaryRequest{}))
			if err != nil || again.Msg.String() != want.String() {
				t.Fatalf("summary after the refusals = %v, %v; want %v", again.Msg, err, want)
			}
		})
	}
}

// Every procedure of BankService is in the bank's policy, for the gateway only.
func TestPolicyCoversEveryProcedure(t *testing.T) {
	t.Parallel()
	methods := bankv1.File_paygate_bank_v1_bank_proto.Services().ByName("BankService").Methods()
	for i := range methods.Len() {
		proc := "/paygate.bank.v1.BankService/" + string(methods.Get(i).Name())
		if got, ok := Policy[proc]; !ok || got != rpcserver.AccessGateway {
			t.Errorf("Policy[%s] = %v, %v; want AccessGateway", proc, got, ok)
		}
	}
}
