package rpcserver_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/gen/paygate/bank/v1/bankv1connect"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
	"github.com/paygate/paygate/internal/sqlitedb"
)

// errDomain is a service's domain error, known to its ErrorMapper.
var errDomain = errors.New("bank: the account is frozen")

// failingBank answers GetAccount with the failure its account_id names.
type failingBank struct {
	bankv1connect.UnimplementedBankServiceHandler
}

const secretText = "/var/lib/paygate/bank1.db: secret internal detail"

func (failingBank) GetAccount(ctx context.Context, req *connect.Request[bankv1.GetAccountRequest]) (*connect.Response[bankv1.GetAccountResponse], error) {
	switch req.Msg.GetAccountId() {
	case "plain":
		return nil, fmt.Errorf("read account: %s", secretText)
	case "unknown-code":
		return nil, connect.NewError(connect.CodeUnknown, errors.New(secretText))
	case "internal-code":
		return nil, connect.NewError(connect.CodeInternal, errors.New(secretText))
	case "storage":
		return nil, fmt.Errorf("write %s: %w", secretText, sqlitedb.ErrClosed)
	case "deadline":
		return nil, fmt.Errorf("wait: %w", context.DeadlineExceeded)
	case "canceled":
		return nil, connect.NewError(connect.CodeCanceled, context.Canceled)
	case "domain":
		return nil, fmt.Errorf("freeze check: %w", errDomain)
	case "reasoned":
		return nil, rpcerr.New(connect.CodeNotFound, "account_not_found", "no account reasoned")
	case "panic":
		panic(secretText)
	}
	return connect.NewResponse(&bankv1.GetAccountResponse{}), nil
}

// TestErrorBoundary: whatever a handler returns, the caller gets a known code with a reason and
// no internal text, never UNKNOWN; the server logs the internal failures in full at ERROR.
func TestErrorBoundary(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	logs := &lockedBuffer{}
	srv, err := rpcserver.New(rpcserver.Config{
		Name:   "bank1",
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Policy: rpcserver.Policy{bankv1connect.BankServiceGetAccountProcedure: rpcserver.AccessPublic},
		MapError: func(_ context.Context, err error) error {
			if errors.Is(err, errDomain) {
				return rpcerr.New(connect.CodeFailedPrecondition, "account_frozen", "the account is frozen")
			}
			return err
		},
		TLS: p.serverTLS(t, bank1ID, 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle(bankv1connect.NewBankServiceHandler(failingBank{}, srv.HandlerOptions()...))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})

	for _, proto := range protocols {
		client := bankv1connect.NewBankServiceClient(httpClient(t, p.clientTLS(t, gatewayID)), "https://"+ln.Addr().String(), proto.opts...)
		for _, tc := range []struct {
			account string
			code    connect.Code
			reason  string
			logged  bool
		}{
			{"plain", connect.CodeInternal, rpcserver.ReasonInternal, true},
			{"unknown-code", connect.CodeInternal, rpcserver.ReasonInternal, true},
			{"internal-code", connect.CodeInternal, rpcserver.ReasonInternal, true},
			{"storage", connect.CodeUnavailable, rpcserver.ReasonStorageUnavailable, true},
			{"deadline", connect.CodeDeadlineExceeded, rpcserver.ReasonDeadlineExceeded, false},
			{"canceled", connect.CodeCanceled, rpcserver.ReasonCanceled, false},
			{"domain", connect.CodeFailedPrecondition, "account_frozen", false},
			{"reasoned", connect.CodeNotFound, "account_not_found", false},
			{"panic", connect.CodeInternal, rpcserver.ReasonInternal, true},
		} {
			t.Run(proto.name+"/"+tc.account, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, err := client.GetAccount(ctx, connect.NewRequest(&bankv1.GetAccountRequest{AccountId: tc.account}))
				if got := connect.CodeOf(err); got != tc.code {
					t.Fatalf("code %v (%v); want %v", got, err, tc.code)
				}
				if got := rpcerr.Reason(err); got != tc.reason {
					t.Fatalf("reason %q (%v); want %q", got, err, tc.reason)
				}
				if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "/var/lib") {
					t.Fatalf("the answer carries internal text: %v", err)
				}
				if tc.logged && !strings.Contains(logs.String(), secretText) {
					t.Fatalf("the internal failure was not logged in full; log:\n%s", logs.String())
				}
			})
		}
	}
}
