package client_test

import (
	"errors"
	"fmt"
	"testing"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/client"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
)

func TestRequestID(t *testing.T) {
	t.Parallel()
	headerOnly := connect.NewError(connect.CodeUnavailable, errors.New("down"))
	headerOnly.Meta().Set(rpcserver.RequestIDHeader, "from-header")
	both := rpcerr.New(connect.CodeNotFound, "payment_not_found", "no payment p-1", rpcserver.RequestIDMetadataKey, "from-info")
	both.Meta().Set(rpcserver.RequestIDHeader, "from-header")
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"error info", fmt.Errorf("get payment: %w", both), "from-info"},
		{"header only", headerOnly, "from-header"},
		{"no id", rpcerr.New(connect.CodeNotFound, "payment_not_found", "no payment p-1"), ""},
		{"not a Connect error", errors.New("dial: refused"), ""},
		{"nil", nil, ""},
	} {
		if got := client.RequestID(tc.err); got != tc.want {
			t.Errorf("%s: RequestID = %q, want %q", tc.name, got, tc.want)
		}
	}
}
