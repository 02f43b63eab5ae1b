package client

import (
	"context"
	"fmt"
	"iter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
)

// Webhooks: the user's webhook endpoints, URLs that the gateway POSTs the user's events to,
// signed with the endpoint's secret (verify them with package client/webhook), and the
// deliveries of events to them. Delivery is at least once, retried for days: a receiver
// de-duplicates by event id.

// WebhookEndpoint is a URL that the user's events are POSTed to: its EndpointId ("we_..."),
// Url, EventTypes, Status (enabled, or disabled with a DisabledReason), CreateTime, and while
// a rotated secret's grace period lasts, PreviousSecretExpireTime.
type WebhookEndpoint = gatewayv1.WebhookEndpoint

// WebhookDelivery is one event for one endpoint: its DeliveryId ("wd_..."), the event
// (EventId, EventType, EventSeq, PaymentId), Status (pending, succeeded or failed),
// NextAttemptTime while pending, and its Attempts, oldest first.
type WebhookDelivery = gatewayv1.WebhookDelivery

// WebhookAttempt is one POST of a delivery: when, the HTTP status the endpoint answered (0 for
// none), the error or the start of an error answer's body, the latency, and whether
// RedeliverWebhook sent it (Manual).
type WebhookAttempt = gatewayv1.WebhookAttempt

// AllEventTypes is the event type that subscribes an endpoint to every event, present and
// future.
const AllEventTypes = "*"

// Reasons of the gateway's InvalidArgument errors for a webhook URL it refuses.
const (
	// ReasonInvalidWebhookURL: the URL is not an absolute https URL (or http, when the gateway
	// allows it) with a host, or it is malformed.
	ReasonInvalidWebhookURL = "invalid_webhook_url"
	// ReasonWebhookAddressRefused: the URL names (or resolves to) a private, loopback or
	// link-local address, which the gateway refuses unless it runs with
	// --webhook-allow-private (as `paygate dev` does).
	ReasonWebhookAddressRefused = "webhook_address_refused"
)

// webhookCall makes one WebhookService call with failover: f is the method of the generated
// client (a method expression such as gatewayv1connect.WebhookServiceClient.ListWebhookEndpoints).
// A call that may have changed something without being safe to repeat (kind sendOnce) moves to
// another address only if its request was not sent.
func webhookCall[Req, Res any](ctx context.Context, c *Client, kind callKind, msg *Req,
	f func(gatewayv1connect.WebhookServiceClient, context.Context, *connect.Request[Req]) (*connect.Response[Res], error)) (*Res, error) {
	if c.Token() == "" {
		return nil, ErrNotLoggedIn
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	var resp *connect.Response[Res]
	err := c.call(ctx, kind, func(ctx context.Context, ep *endpoint) (err error) {
		resp, err = f(ep.webhooks, ctx, connect.NewRequest(msg))
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// CreateWebhookEndpoint registers url for the user's events of eventTypes ("payment.succeeded",
// "payment.failed", ... or AllEventTypes; none given means AllEventTypes) and returns the
// endpoint with its signing secret ("whsec_..."). The secret is shown this once: keep it where
// the receiver reads it (see package client/webhook). Events from now on are delivered to it.
//
// The URL must be https (http only when the gateway allows it) and must not name a private,
// loopback or link-local address (unless the gateway allows them, as `paygate dev` does): a
// refused URL is InvalidArgument with reason ReasonInvalidWebhookURL or
// ReasonWebhookAddressRefused. An unknown event type is InvalidArgument too.
//
// The request is sent to one gateway address only (a resend could register the URL twice).
func (c *Client) CreateWebhookEndpoint(ctx context.Context, url string, eventTypes ...string) (*WebhookEndpoint, string, error) {
	if len(eventTypes) == 0 {
		eventTypes = []string{AllEventTypes}
	}
	resp, err := webhookCall(ctx, c, sendOnce, &gatewayv1.CreateWebhookEndpointRequest{Url: url, EventTypes: eventTypes},
		gatewayv1connect.WebhookServiceClient.CreateWebhookEndpoint)
	if err != nil {
		return nil, "", fmt.Errorf("create webhook endpoint: %w", err)
	}
	return resp.GetEndpoint(), resp.GetSecret(), nil
}

// ListWebhookEndpoints returns the user's webhook endpoints, oldest first.
func (c *Client) ListWebhookEndpoints(ctx context.Context) ([]*WebhookEndpoint, error) {
	resp, err := webhookCall(ctx, c, idempotent, &gatewayv1.ListWebhookEndpointsRequest{},
		gatewayv1connect.WebhookServiceClient.ListWebhookEndpoints)
	if err != nil {
		return nil, fmt.Errorf("list webhook endpoints: %w", err)
	}
	return resp.GetEndpoints(), nil
}

// DeleteWebhookEndpoint removes one of the user's endpoints; its pending deliveries are
// dropped. An endpoint that does not exist, or is another user's, is NotFound. Deleting is
// safe to repeat, so a request that reached an address that then failed is sent to the next:
// NotFound then may mean that the first one deleted it.
func (c *Client) DeleteWebhookEndpoint(ctx context.Context, id string) error {
	_, err := webhookCall(ctx, c, idempotent, &gatewayv1.DeleteWebhookEndpointRequest{EndpointId: id},
		gatewayv1connect.WebhookServiceClient.DeleteWebhookEndpoint)
	if err != nil {
		return fmt.Errorf("delete webhook endpoint %s: %w", id, err)
	}
	return nil
}

// EnableWebhookEndpoint turns delivery to an endpoint back on, after the gateway disabled it
// for its failures or DisableWebhookEndpoint did; its pending deliveries resume at once. It
// returns the endpoint as it is now.
func (c *Client) EnableWebhookEndpoint(ctx context.Context, id string) (*WebhookEndpoint, error) {
	resp, err := webhookCall(ctx, c, idempotent, &gatewayv1.EnableWebhookEndpointRequest{EndpointId: id},
		gatewayv1connect.WebhookServiceClient.EnableWebhookEndpoint)
	if err != nil {
		return nil, fmt.Errorf("enable webhook endpoint %s: %w", id, err)
	}
	return resp.GetEndpoint(), nil
}

// DisableWebhookEndpoint stops delivery to an endpoint: its events go on being recorded and
// are delivered once it is enabled again. It returns the endpoint as it is now.
func (c *Client) DisableWebhookEndpoint(ctx context.Context, id string) (*WebhookEndpoint, error) {
	resp, err := webhookCall(ctx, c, idempotent, &gatewayv1.DisableWebhookEndpointRequest{EndpointId: id},
		gatewayv1connect.WebhookServiceClient.DisableWebhookEndpoint)
	if err != nil {
		return nil, fmt.Errorf("disable webhook endpoint %s: %w", id, err)
	}
	return resp.GetEndpoint(), nil
}

// RotateWebhookSecret gives an endpoint a new signing secret and returns it, shown this once,
// with the endpoint. For keepPrevious (at most 24 hours; 0: not at all) the old secret keeps
// signing too, so that every request carries a v1 signature for each and a receiver still on
// the old secret goes on verifying until it is given the new one.
//
// The request is sent to one gateway address only: a rotation sent twice would replace the
// secret it returned the first time.
func (c *Client) RotateWebhookSecret(ctx context.Context, id string, keepPrevious time.Duration) (*WebhookEndpoint, string, error) {
	req := &gatewayv1.RotateWebhookSecretRequest{EndpointId: id}
	if keepPrevious != 0 {
		req.PreviousSecretTtl = durationpb.New(keepPrevious)
	}
	resp, err := webhookCall(ctx, c, sendOnce, req, gatewayv1connect.WebhookServiceClient.RotateWebhookSecret)
	if err != nil {
		return nil, "", fmt.Errorf("rotate webhook secret of %s: %w", id, err)
	}
	return resp.GetEndpoint(), resp.GetSecret(), nil
}

// WebhookDeliveryQuery selects a page of an endpoint's deliveries.
type WebhookDeliveryQuery struct {
	// PageSize is the most deliveries per page: 0 means 20, at most 100.
	PageSize int
	// PageToken is the NextPageToken of the previous page; "" for the first page.
	PageToken string
	// Status keeps only deliveries with this status; unspecified keeps all.
	Status gatewayv1.WebhookDeliveryStatus
}

// WebhookDeliveryPage is one page of an endpoint's deliveries, newest first.
type WebhookDeliveryPage struct {
	Deliveries []*WebhookDelivery
	// NextPageToken fetches the next page; "" on the last page.
	NextPageToken string
}

// ListWebhookDeliveries returns one page of the deliveries of endpoint endpointID, newest
// first, each with its attempts.
func (c *Client) ListWebhookDeliveries(ctx context.Context, endpointID string, q WebhookDeliveryQuery) (WebhookDeliveryPage, error) {
	resp, err := webhookCall(ctx, c, idempotent, &gatewayv1.ListWebhookDeliveriesRequest{
		EndpointId: endpointID, PageSize: int32(q.PageSize), PageToken: q.PageToken, Status: q.Status,
	}, gatewayv1connect.WebhookServiceClient.ListWebhookDeliveries)
	if err != nil {
		return WebhookDeliveryPage{}, fmt.Errorf("list webhook deliveries of %s: %w", endpointID, err)
	}
	return WebhookDeliveryPage{Deliveries: resp.GetDeliveries(), NextPageToken: resp.GetNextPageToken()}, nil
}

// AllWebhookDeliveries iterates over all the deliveries of endpoint endpointID that q selects
// (q.PageToken, if set, is where to start), newest first, fetching pages as needed. It stops at
// the first error, which it yields.
func (c *Client) AllWebhookDeliveries(ctx context.Context, endpointID string, q WebhookDeliveryQuery) iter.Seq2[*WebhookDelivery, error] {
	return func(yield func(*WebhookDelivery, error) bool) {
		for {
			page, err := c.ListWebhookDeliveries(ctx, endpointID, q)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, d := range page.Deliveries {
				if !yield(d, nil) {
					return
				}
			}
			if page.NextPageToken == "" {
				return
			}
			q.PageToken = page.NextPageToken
		}
	}
}

// RedeliverWebhook sends a delivery again now, whatever its status (a failed one included),
// as a new attempt, and returns the delivery with that attempt last. The endpoint may thus get
// the event once more: receivers de-duplicate by event id. The request is sent to one gateway
// address only.
func (c *Client) RedeliverWebhook(ctx context.Context, deliveryID string) (*WebhookDelivery, error) {
	resp, err := webhookCall(ctx, c, sendOnce, &gatewayv1.RedeliverWebhookRequest{DeliveryId: deliveryID},
		gatewayv1connect.WebhookServiceClient.RedeliverWebhook)
	if err != nil {
		return nil, fmt.Errorf("redeliver webhook %s: %w", deliveryID, err)
	}
	return resp.GetDelivery(), nil
}
