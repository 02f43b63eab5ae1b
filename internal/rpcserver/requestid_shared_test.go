package rpcserver

import (
	"errors"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/paygate/paygate/internal/rpcerr"
)

// TestWithRequestIDOnSharedError: one package-level error answered by many calls at once gets
// each call's id without a data race (run with -race), and is itself left unchanged.
func TestWithRequestIDOnSharedError(t *testing.T) {
	t.Parallel()
	shared := rpcerr.New(connect.CodeUnauthenticated, "invalid_token", "invalid token: log in again")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			id := string(rune('a' + i))
			for range 100 {
				if got := infoRequestID(withRequestID(shared, id)); got != id {
					t.Errorf("request id %q, want %q", got, id)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := infoRequestID(shared); got != "" {
		t.Errorf("the shared error was changed: request id %q", got)
	}
}

// infoRequestID returns the request id in the metadata of err's ErrorInfo.
func infoRequestID(err error) string {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return ""
	}
	for _, d := range ce.Details() {
		if v, verr := d.Value(); verr == nil {
			if info, ok := v.(*errdetails.ErrorInfo); ok {
				return info.GetMetadata()[RequestIDMetadataKey]
			}
		}
	}
	return ""
}
