package rpcserver

import (
	"strings"
	"testing"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// A request is logged before it is validated: its fields must not carry arbitrary amounts of
// client data into the log.
func TestMessageAttrsClipLongFields(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 100_000)
	attrs := appendMessageAttrs(nil, &gatewayv1.ExecutePaymentRequest{PaymentId: long, Currency: long, Amount: 5})
	attrs = appendMessageAttrs(attrs, &bankv1.CommitTransactionRequest{TransactionId: long})
	seen := map[string]string{}
	for _, a := range attrs {
		seen[a.Key] = a.Value.String()
	}
	for _, k := range []string{"payment_id", "currency", "transaction_id"} {
		v, ok := seen[k]
		if !ok {
			t.Fatalf("%s not logged: %v", k, attrs)
		}
		if len(v) > maxLoggedField+32 || !strings.Contains(v, "(100000 bytes)") {
			t.Errorf("%s logged as %d bytes (%.80q), want it clipped with its length", k, len(v), v)
		}
	}
	short := appendMessageAttrs(nil, &gatewayv1.ExecutePaymentRequest{PaymentId: "0b7d5c1e-0000-4000-8000-000000000001"})
	if len(short) != 1 || short[0].Value.String() != "0b7d5c1e-0000-4000-8000-000000000001" {
		t.Errorf("a valid id was changed: %v", short)
	}
}
