package gateway

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/webhook"
)

// WebhookService: users' webhook endpoints, their deliveries and redelivery. The delivery
// itself (fan-out, sending, retries) is in webhooks_delivery.go.

// Reasons of the WebhookService's refusals.
const (
	reasonInvalidWebhookURL       = "invalid_webhook_url"
	reasonWebhookAddressRefused   = "webhook_address_refused"
	reasonTooManyWebhookEndpoints = "too_many_webhook_endpoints"
	reasonWebhookEndpointNotFound = "webhook_endpoint_not_found"
	reasonWebhookDeliveryNotFound = "webhook_delivery_not_found"
	reasonWebhookEndpointDisabled = "webhook_endpoint_disabled"
)

// listDeliveriesDefault is the page size of a ListWebhookDeliveries that asks for none.
const listDeliveriesDefault = 20

// redeliverWait bounds how long RedeliverWebhook waits for its attempt to be recorded.
const redeliverWait = 15 * time.Second

// webhookService implements gatewayv1connect.WebhookServiceHandler.
type webhookService struct{ g *Gateway }

// endpointProto is ep as the API shows it at now.
func endpointProto(ep webhookEndpoint, now time.Time) *gatewayv1.WebhookEndpoint {
	out := &gatewayv1.WebhookEndpoint{
		EndpointId:     ep.ID,
		Url:            ep.URL,
		EventTypes:     ep.EventTypes,
		Status:         gatewayv1.WebhookEndpointStatus(ep.Status),
		DisabledReason: ep.DisabledReason,
		CreateTime:     timestamppb.New(ep.CreatedAt),
	}
	if ep.Status != endpointDisabled {
		out.DisabledReason = ""
	}
	if ep.PreviousSecret != "" && now.Before(ep.PreviousExpiresAt) {
		out.PreviousSecretExpireTime = timestamppb.New(ep.PreviousExpiresAt)
	}
	return out
}

// deliveryProto is d as the API shows it.
func deliveryProto(d webhookDelivery) *gatewayv1.WebhookDelivery {
	out := &gatewayv1.WebhookDelivery{
		DeliveryId: d.ID,
		EndpointId: d.EndpointID,
		EventId:    "evt_" + strconv.FormatInt(d.EventSeq, 10),
		EventType:  d.EventType,
		EventSeq:   d.EventSeq,
		PaymentId:  d.PaymentID,
		Status:     gatewayv1.WebhookDeliveryStatus(d.Status),
		CreateTime: timestamppb.New(d.CreatedAt),
	}
	if d.Status == deliveryPending {
		out.NextAttemptTime = timestamppb.New(d.NextAttemptAt)
	}
	for _, a := range d.Log {
		out.Attempts = append(out.Attempts, &gatewayv1.WebhookAttempt{
			AttemptTime: timestamppb.New(a.At),
			HttpStatus:  int32(a.HTTPStatus),
			Error:       a.Error,
			Latency:     durationpb.New(a.Latency),
			Manual:      a.Manual,
		})
	}
	return out
}

// endpointNotFound is the answer for an endpoint that is not the caller's.
func endpointNotFound() error {
	return rpcerr.New(connect.CodeNotFound, reasonWebhookEndpointNotFound, "endpoint_id: no such webhook endpoint")
}

// endpointError maps a store error about an endpoint.
func endpointError(err error) error {
	if errors.Is(err, ErrNotFound) {
		return endpointNotFound()
	}
	return err
}

// webhookURLError is the answer for an endpoint URL that ValidateURL or the address policy
// refuses.
func webhookURLError(err error) error {
	var addr *webhook.AddressError
	if errors.As(err, &addr) {
		return rpcerr.New(connect.CodeInvalidArgument, reasonWebhookAddressRefused,
			"url: "+addr.Error()+" (the gateway sends webhooks to public addresses only)")
	}
	var ue *webhook.URLError
	if errors.As(err, &ue) {
		return rpcerr.New(connect.CodeInvalidArgument, reasonInvalidWebhookURL, "url: "+ue.Msg)
	}
	return rpcerr.New(connect.CodeInvalidArgument, reasonInvalidWebhookURL, "url: not a valid webhook URL")
}

// CreateWebhookEndpoint implements WebhookService.CreateWebhookEndpoint.
func (w *webhookService) CreateWebhookEndpoint(ctx context.Context, req *connect.Request[gatewayv1.CreateWebhookEndpointRequest]) (*connect.Response[gatewayv1.CreateWebhookEndpointResponse], error) {
	user, err := mustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	g := w.g
	u, err := webhook.ValidateURL(req.Msg.GetUrl(), g.cfg.WebhookAllowHTTP)
	if err == nil {
		err = webhook.CheckLiteral(u, g.webhookPolicy())
	}
	if err != nil {
		return nil, webhookURLError(err)
	}
	secret, err := webhook.NewSecret()
	if err != nil {
		return nil, err
	}
	ep := webhookEndpoint{
		ID:         newWebhookID("we_"),
		Username:   user.Username,
		URL:        u.String(),
		EventTypes: req.Msg.GetEventTypes(),
		Secret:     secret,
		Status:     endpointEnabled,
		CreatedAt:  g.now(),
	}
	ep, err = g.store.CreateWebhookEndpoint(ctx, ep, maxWebhookEndpoints)
	if errors.Is(err, ErrTooManyEndpoints) {
		return nil, rpcerr.Newf(connect.CodeResourceExhausted, reasonTooManyWebhookEndpoints,
			"a user may have at most %d webhook endpoints: delete one first", maxWebhookEndpoints)
	}
	if err != nil {
		return nil, err
	}
	addCallAttrs(ctx, slog.String("endpoint_id", ep.ID))
	return connect.NewResponse(&gatewayv1.CreateWebhookEndpointResponse{Endpoint: endpointProto(ep, g.now()), Secret: secret}), nil
}

// ListWebhookEndpoints implements WebhookService.ListWebhookEndpoints.
func (w *webhookService) ListWebhookEndpoints(ctx context.Context, _ *connect.Request[gatewayv1.ListWebhookEndpointsRequest]) (*connect.Response[gatewayv1.ListWebhookEndpointsResponse], error) {
	user, err := mustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	eps, err := w.g.store.WebhookEndpoints(ctx, user.Username)
	if err != nil {
		return nil, err
	}
	resp := &gatewayv1.ListWebhookEndpointsResponse{}
	now := w.g.now()
	for _, ep := range eps {
		resp.Endpoints = append(resp.Endpoints, endpointProto(ep, now))
	}
	return connect.NewResponse(resp), nil
}

// DeleteWebhookEndpoint implements WebhookService.DeleteWebhookEndpoint.
func (w *webhookService) DeleteWebhookEndpoint(ctx context.Context, req *connect.Request[gatewayv1.DeleteWebhookEndpointRequest]) (*connect.Response[gatewayv1.DeleteWebhookEndpointResponse], error) {
	user, err := mustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if err := w.g.store.DeleteWebhookEndpoint(ctx, user.Username, req.Msg.GetEndpointId()); err != nil {
		return nil, endpointError(err)
	}
	return connect.NewResponse(&gatewayv1.DeleteWebhookEndpointResponse{}), nil
}

// EnableWebhookEndpoint implements WebhookService.EnableWebhookEndpoint.
func (w *webhookService) EnableWebhookEndpoint(ctx context.Context, req *connect.Request[gatewayv1.EnableWebhookEndpointRequest]) (*connect.Response[gatewayv1.EnableWebhookEndpointResponse], error) {
	ep, err := w.update(ctx, req.Msg.GetEndpointId(), func(ep *webhookEndpoint) error {
		ep.Status, ep.DisabledReason = endpointEnabled, ""
		return nil
	})
	if err != nil {
		return nil, err
	}
	w.g.webhooks.kick()
	return connect.NewResponse(&gatewayv1.EnableWebhookEndpointResponse{Endpoint: endpointProto(ep, w.g.now())}), nil
}

// DisableWebhookEndpoint implements WebhookService.DisableWebhookEndpoint.
func (w *webhookService) DisableWebhookEndpoint(ctx context.Context, req *connect.Request[gatewayv1.DisableWebhookEndpointRequest]) (*connect.Response[gatewayv1.DisableWebhookEndpointResponse], error) {
	ep, err := w.update(ctx, req.Msg.GetEndpointId(), func(ep *webhookEndpoint) error {
		ep.Status, ep.DisabledReason = endpointDisabled, disabledByUser
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gatewayv1.DisableWebhookEndpointResponse{Endpoint: endpointProto(ep, w.g.now())}), nil
}

// RotateWebhookSecret implements WebhookService.RotateWebhookSecret.
func (w *webhookService) RotateWebhookSecret(ctx context.Context, req *connect.Request[gatewayv1.RotateWebhookSecretRequest]) (*connect.Response[gatewayv1.RotateWebhookSecretResponse], error) {
	secret, err := webhook.NewSecret()
	if err != nil {
		return nil, err
	}
	ttl := req.Msg.GetPreviousSecretTtl().AsDuration()
	now := w.g.now()
	ep, err := w.update(ctx, req.Msg.GetEndpointId(), func(ep *webhookEndpoint) error {
		if ttl > 0 {
			ep.PreviousSecret, ep.PreviousExpiresAt = ep.Secret, now.Add(ttl)
		} else {
			ep.PreviousSecret, ep.PreviousExpiresAt = "", time.Time{}
		}
		ep.Secret = secret
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gatewayv1.RotateWebhookSecretResponse{Endpoint: endpointProto(ep, now), Secret: secret}), nil
}

// update changes one of the caller's endpoints with fn.
func (w *webhookService) update(ctx context.Context, id string, fn func(ep *webhookEndpoint) error) (webhookEndpoint, error) {
	user, err := mustPrincipal(ctx)
	if err != nil {
		return webhookEndpoint{}, err
	}
	ep, err := w.g.store.UpdateWebhookEndpoint(ctx, user.Username, id, w.g.now(), fn)
	return ep, endpointError(err)
}

// ListWebhookDeliveries implements WebhookService.ListWebhookDeliveries. The page token is the
// event seq of the page's last delivery (deliveries are listed by event seq, newest first).
func (w *webhookService) ListWebhookDeliveries(ctx context.Context, req *connect.Request[gatewayv1.ListWebhookDeliveriesRequest]) (*connect.Response[gatewayv1.ListWebhookDeliveriesResponse], error) {
	user, err := mustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	size := int(m.GetPageSize())
	if size == 0 {
		size = listDeliveriesDefault
	}
	var before int64
	if tok := m.GetPageToken(); tok != "" {
		before, err = strconv.ParseInt(tok, 10, 64)
		if err != nil || before <= 0 {
			return nil, rpcerr.New(connect.CodeInvalidArgument, "invalid_page_token",
				"page_token: not a token from the previous page of this listing")
		}
	}
	ds, err := w.g.store.WebhookDeliveries(ctx, user.Username, m.GetEndpointId(), before, int32(m.GetStatus()), size+1)
	if err != nil {
		return nil, endpointError(err)
	}
	resp := &gatewayv1.ListWebhookDeliveriesResponse{}
	if len(ds) > size {
		ds = ds[:size]
		resp.NextPageToken = strconv.FormatInt(ds[len(ds)-1].EventSeq, 10)
	}
	for _, d := range ds {
		resp.Deliveries = append(resp.Deliveries, deliveryProto(d))
	}
	return connect.NewResponse(resp), nil
}

// RedeliverWebhook implements WebhookService.RedeliverWebhook: it asks for an attempt now
// (made by whichever replica's worker claims the endpoint first, after an attempt in flight
// to the same endpoint) and waits for it to be recorded, for at most redeliverWait. If it is
// not recorded by then (the endpoint is slow, or busy with other deliveries), the answer is
// the delivery as it is, without the new attempt, which is still made.
func (w *webhookService) RedeliverWebhook(ctx context.Context, req *connect.Request[gatewayv1.RedeliverWebhookRequest]) (*connect.Response[gatewayv1.RedeliverWebhookResponse], error) {
	user, err := mustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	g := w.g
	id := req.Msg.GetDeliveryId()
	notFound := rpcerr.New(connect.CodeNotFound, reasonWebhookDeliveryNotFound, "delivery_id: no such webhook delivery")
	d, err := g.store.WebhookDelivery(ctx, user.Username, id)
	if errors.Is(err, ErrNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	ep, err := g.store.WebhookEndpoint(ctx, user.Username, d.EndpointID)
	if errors.Is(err, ErrNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if ep.Status != endpointEnabled {
		return nil, rpcerr.New(connect.CodeFailedPrecondition, reasonWebhookEndpointDisabled,
			"delivery_id: its endpoint is disabled; enable it first")
	}
	d, err = g.store.RequestRedelivery(ctx, user.Username, id)
	if errors.Is(err, ErrNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	seen := len(d.Log)
	g.webhooks.kick()
	wctx, cancel := context.WithTimeout(ctx, redeliverWait)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			// Not made in time: the delivery as it is (the attempt is still to come).
			d, err = g.store.WebhookDelivery(ctx, user.Username, id)
			if err != nil {
				return nil, endpointError(err)
			}
			return connect.NewResponse(&gatewayv1.RedeliverWebhookResponse{Delivery: deliveryProto(d)}), nil
		case <-t.C:
		}
		cur, err := g.store.WebhookDelivery(wctx, user.Username, id)
		if errors.Is(err, ErrNotFound) {
			return nil, notFound
		}
		if err != nil {
			if wctx.Err() != nil {
				continue
			}
			return nil, err
		}
		for _, a := range cur.Log[min(seen, len(cur.Log)):] {
			if a.Manual {
				return connect.NewResponse(&gatewayv1.RedeliverWebhookResponse{Delivery: deliveryProto(cur)}), nil
			}
		}
	}
}
