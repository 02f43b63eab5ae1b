// Package webhook is the sending side of paygate's webhooks: endpoint secrets, the checks of an
// endpoint URL, an HTTP client that cannot be turned against the operator's own network, one
// delivery attempt, and the retry schedule. The receivers' side, the signature format and its
// verification, is the public package client/webhook.
//
// The endpoint URLs are chosen by users, so every request is a potential server-side request
// forgery (SSRF): a URL naming 127.0.0.1, a cloud metadata address, or a name that resolves to
// a private address (now, or after its DNS answer changes). The defences are in layers:
//
//   - ValidateURL, at registration and before every attempt: https only, no credentials, no
//     ambiguous numeric hosts; CheckLiteral refuses an IP literal that the policy refuses.
//   - NewClient's dialer applies the AddressPolicy (DefaultPolicy: public unicast only) to the
//     actual IP of every connection, after DNS resolution and on every redirect, which no DNS
//     trick gets past; there is no proxy.
//   - Redirects are few (Options.MaxRedirects), 307 or 308 only, never https to http.
//   - Timeouts bound every attempt, and Deliver reads a bounded part of the response.
//
// AllowAll (--webhook-allow-private) turns the address check off, for development and tests.
//
// Deliver makes one attempt and classifies its outcome (Attempt.Success, Retryable, Gone);
// Schedule says when to try again and when to give up, and ShouldDisable when to disable an
// endpoint that keeps failing. Delivery is at least once: receivers deduplicate by event id.
package webhook
