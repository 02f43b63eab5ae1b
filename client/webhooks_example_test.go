package client_test

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/client"
)

// Register a webhook endpoint for two event types. The secret is shown this once: keep it
// where the receiver reads it, and verify each request with package client/webhook.
func ExampleClient_CreateWebhookEndpoint() {
	ctx := context.Background()
	c, err := client.New(gatewayAddr, client.WithTLSDir(certDir))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Login(ctx, "alice", "alice-pass-123"); err != nil {
		log.Fatal(err)
	}

	ep, secret, err := c.CreateWebhookEndpoint(ctx, "https://shop.example/paygate", "payment.succeeded", "payment.failed")
	if err != nil {
		log.Fatal(err)
	}
	defer c.DeleteWebhookEndpoint(ctx, ep.GetEndpointId())
	fmt.Println(strings.HasPrefix(ep.GetEndpointId(), "we_"), ep.GetEventTypes(), strings.HasPrefix(secret, "whsec_"))

	// A new secret; the old one goes on signing too for an hour.
	ep, _, err = c.RotateWebhookSecret(ctx, ep.GetEndpointId(), time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("previous secret kept:", ep.GetPreviousSecretExpireTime() != nil)

	// A loopback address is refused, unless the gateway runs with --webhook-allow-private.
	_, _, err = c.CreateWebhookEndpoint(ctx, "https://127.0.0.1:8080/paygate")
	fmt.Println(connect.CodeOf(err), client.Reason(err))
	// Output:
	// true [payment.succeeded payment.failed] true
	// previous secret kept: true
	// invalid_argument webhook_address_refused
}
