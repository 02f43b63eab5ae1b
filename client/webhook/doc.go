// Package webhook verifies the webhooks that paygate sends: every payment event is POSTed as
// JSON to the endpoints a merchant registered, with a signature header that proves it comes
// from paygate and was not changed or replayed.
//
// # The signature
//
// Each request carries SignatureHeader ("Paygate-Signature"); for the body
// {"id":"evt_1","type":"payment.succeeded"} signed at 2026-01-01 00:00 UTC with the secret
// "whsec_example-secret-not-for-production":
//
//	Paygate-Signature: t=1767225600,v1=6033d424104dae92ba9faa385dea059db773f5ad81fe849b927ac904b2c4c785
//
// t is when the request was signed, in unix seconds, and v1 is the hex HMAC-SHA256, keyed with
// the endpoint's secret (the whole "whsec_..." string), of t, a dot and the exact bytes of the
// body. While a rotated secret's grace period lasts, the header has one v1 per secret; any one
// matching is enough. Verify checks the signature in constant time and refuses a timestamp
// more than a tolerance (DefaultTolerance, five minutes) from the receiver's clock, which stops
// a captured request from being replayed later.
//
// Verify the raw body, before decoding it: JSON re-encoded by a framework is not the bytes
// that were signed.
//
// # A receiver
//
// ReadVerified reads a bounded body and verifies it:
//
//	http.HandleFunc("POST /paygate/webhook", func(w http.ResponseWriter, r *http.Request) {
//		body, err := webhook.ReadVerified(r, os.Getenv("PAYGATE_WEBHOOK_SECRET"), 0)
//		switch {
//		case errors.Is(err, webhook.ErrBodyTooLarge):
//			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
//			return
//		case err != nil:
//			http.Error(w, "bad signature", http.StatusBadRequest)
//			return
//		}
//		var event struct {
//			ID   string `json:"id"`
//			Type string `json:"type"`
//		}
//		if err := json.Unmarshal(body, &event); err != nil {
//			http.Error(w, "bad event", http.StatusBadRequest)
//			return
//		}
//		// Record the event before answering; answer quickly (within seconds).
//		w.WriteHeader(http.StatusNoContent)
//	})
//
// Delivery is at least once: paygate retries an event until the endpoint answers 2xx, for up to
// three days, with the same event id (also in the Paygate-Event-Id header), so the same event
// may arrive more than once and events may arrive out of order. Deduplicate by event id. Any
// answer other than 2xx is a failure and is retried; redirects other than 307 and 308 are
// failures too (they would turn the POST into a GET without the body).
package webhook
