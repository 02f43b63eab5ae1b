package main

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
)

// TestPrintErrorRequestID: a failure the gateway answered is printed with its request id; other
// failures without one.
func TestPrintErrorRequestID(t *testing.T) {
	t.Parallel()
	answered := rpcerr.New(connect.CodeNotFound, "payment_not_found", "no payment p-1", rpcserver.RequestIDMetadataKey, "01a232d8-64b4-7d3f-b25c-e947461ea4f4")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("status: %w", answered), "paygate: status: not_found: no payment p-1\nrequest id: 01a232d8-64b4-7d3f-b25c-e947461ea4f4\n"},
		{errors.New("no session: run 'paygate login' first"), "paygate: no session: run 'paygate login' first\n"},
	} {
		var out bytes.Buffer
		printError(&out, tc.err)
		if out.String() != tc.want {
			t.Errorf("printed %q, want %q", out.String(), tc.want)
		}
	}
}
