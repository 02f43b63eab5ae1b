package webhook_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/paygate/paygate/client/webhook"
)

// A receiver verifies the raw body with the endpoint's secret before it decodes the event.
func ExampleReadVerified() {
	const secret = "whsec_example-secret-not-for-production"
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := webhook.ReadVerified(r, secret, 64<<10)
		if err != nil {
			http.Error(w, "bad signature", http.StatusBadRequest)
			return
		}
		fmt.Printf("verified %s\n", body)
		w.WriteHeader(http.StatusNoContent)
	})

	body := `{"id":"evt_1","type":"payment.succeeded"}`
	req := httptest.NewRequest(http.MethodPost, "/paygate/webhook", strings.NewReader(body))
	req.Header.Set(webhook.SignatureHeader, webhook.Sign(secret, time.Now(), []byte(body)))
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, req)
	fmt.Println(rec.Code)

	// The same request with a changed body is refused.
	forged := httptest.NewRequest(http.MethodPost, "/paygate/webhook", strings.NewReader(strings.Replace(body, "evt_1", "evt_2", 1)))
	forged.Header.Set(webhook.SignatureHeader, req.Header.Get(webhook.SignatureHeader))
	rec = httptest.NewRecorder()
	handler.ServeHTTP(rec, forged)
	fmt.Println(rec.Code)
	// Output:
	// verified {"id":"evt_1","type":"payment.succeeded"}
	// 204
	// 400
}

// Verify tells a forgery from a replay with errors.Is.
func ExampleVerify() {
	const secret = "whsec_example-secret-not-for-production"
	body := []byte(`{"id":"evt_1"}`)
	signedAt := time.Date(2027, 1, 1, 12, 0, 0, 0, time.UTC)
	header := webhook.Sign(secret, signedAt, body)
	fmt.Println(header)

	fmt.Println(webhook.VerifyAt(secret, header, body, 0, signedAt.Add(time.Minute)))
	err := webhook.VerifyAt("whsec_another", header, body, 0, signedAt)
	fmt.Println(errors.Is(err, webhook.ErrSignature))
	err = webhook.VerifyAt(secret, header, body, 0, signedAt.Add(time.Hour))
	fmt.Println(errors.Is(err, webhook.ErrTimestamp))
	// Output:
	// t=1798804800,v1=5b7aad39a629a8da1d74e7a5083ccba88d250bb1ea8813479da6e3b821692433
	// <nil>
	// true
	// true
}
