package rpcserver

import (
	"regexp"
	"testing"
	"unicode/utf8"

	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/proto"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// The rules of ExecutePaymentRequest (proto/paygate/gateway/v1/gateway.proto), written out
// again so that the fuzz target checks the generated validation against an independent reading.
var (
	fuzzUUID     = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	fuzzULID     = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$`)
	fuzzCurrency = regexp.MustCompile(`^[A-Z]{3}$`)
)

const maxAmount = 1_000_000_000_000_000 // 10^15 minor units

// FuzzExecutePaymentValidation runs the request validation the gateway's interceptor applies
// (protovalidate) on ExecutePaymentRequests built from fuzzed fields, and on the bytes of one
// decoded as the server would. It must never panic; it must reject every amount ≤ 0 or above
// 10^15 and every request paying an account to itself; and it must accept exactly the
// requests that follow every rule of the proto file.
func FuzzExecutePaymentValidation(f *testing.F) {
	f.Add("0b8e9f5e-3c1a-4d2b-9e8f-7a6b5c4d3e2f", "bank1-1001", "bank2-2002", int64(1050), "USD", "rent")
	f.Add("01ARZ3NDEKTSV4RRFFQ69G5FAV", "bank1-1001", "bank1-1002", int64(1), "EUR", "")
	f.Add("0b8e9f5e-3c1a-4d2b-9e8f-7a6b5c4d3e2f", "bank1-1001", "bank1-1001", int64(100), "USD", "")
	f.Add("not-a-uuid", "bank1-1001", "bank2-2002", int64(100), "USD", "")
	f.Add("0b8e9f5e-3c1a-4d2b-9e8f-7a6b5c4d3e2f", "bank1-1001", "bank2-2002", int64(0), "USD", "")
	f.Add("0b8e9f5e-3c1a-4d2b-9e8f-7a6b5c4d3e2f", "bank1-1001", "bank2-2002", int64(-1), "USD", "")
	f.Add("0b8e9f5e-3c1a-4d2b-9e8f-7a6b5c4d3e2f", "bank1-1001", "bank2-2002", int64(maxAmount), "USD", "")
	f.Add("0b8e9f5e-3c1a-4d2b-9e8f-7a6b5c4d3e2f", "bank1-1001", "bank2-2002", int64(maxAmount+1), "USD", "")
	f.Add("0b8e9f5e-3c1a-4d2b-9e8f-7a6b5c4d3e2f", "bank1-1001", "bank2-2002", int64(-1<<63), "usd", "")
	f.Add("0b8e9f5e-3c1a-4d2b-9e8f-7a6b5c4d3e2f\n", "", "bank2-2002", int64(5), "USD", "é")
	validator, err := protovalidate.New()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, id, from, to string, amount int64, currency, description string) {
		req := &gatewayv1.ExecutePaymentRequest{PaymentId: id, FromAccount: from, ToAccount: to, Amount: amount, Currency: currency, Description: description}
		verr := validator.Validate(req)
		if (amount <= 0 || amount > maxAmount) && verr == nil {
			t.Fatalf("amount %d accepted", amount)
		}
		if from == to && verr == nil {
			t.Fatalf("payment from %q to itself accepted", from)
		}
		// The server decodes the wire bytes first; invalid UTF-8 never gets past the decoder.
		data, merr := proto.MarshalOptions{}.Marshal(req)
		if merr == nil {
			var back gatewayv1.ExecutePaymentRequest
			if err := proto.Unmarshal(data, &back); err != nil {
				t.Fatalf("round trip: %v", err)
			}
			if err := validator.Validate(&back); (err == nil) != (verr == nil) {
				t.Fatalf("validation differs after a round trip: %v, then %v", verr, err)
			}
		}
		for _, s := range []string{id, from, to, currency, description} {
			if !utf8.ValidString(s) {
				return // the decoder refuses it first; the rules above are all that can be said
			}
		}
		runes := utf8.RuneCountInString
		want := (fuzzUUID.MatchString(id) || fuzzULID.MatchString(id)) &&
			runes(from) >= 1 && runes(from) <= 64 &&
			runes(to) >= 1 && runes(to) <= 64 &&
			from != to &&
			amount > 0 && amount <= maxAmount &&
			fuzzCurrency.MatchString(currency) &&
			runes(description) <= 200
		if want != (verr == nil) {
			t.Fatalf("request %v: validation says %v; the rules say valid=%v", req, verr, want)
		}
	})
}
