package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/client"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
)

// fakeWebhooks is a WebhookService that records its calls. With abort, every call reaches it
// and its stream is then reset, as when a replica dies after reading a request.
type fakeWebhooks struct {
	gatewayv1connect.UnimplementedWebhookServiceHandler
	abort bool

	mu    sync.Mutex
	calls map[string]int
	auth  []string
	last  any
}

func (f *fakeWebhooks) record(procedure string, h http.Header, msg any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[procedure]++
	f.auth = append(f.auth, h.Get("Authorization"))
	f.last = msg
	if f.abort {
		panic(http.ErrAbortHandler)
	}
}

func (f *fakeWebhooks) count(procedure string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[procedure]
}

var fakeEndpoint = &gatewayv1.WebhookEndpoint{EndpointId: "we_1", Url: "https://shop.example/hook", EventTypes: []string{"*"},
	Status: gatewayv1.WebhookEndpointStatus_WEBHOOK_ENDPOINT_STATUS_ENABLED}

func (f *fakeWebhooks) CreateWebhookEndpoint(_ context.Context, req *connect.Request[gatewayv1.CreateWebhookEndpointRequest]) (*connect.Response[gatewayv1.CreateWebhookEndpointResponse], error) {
	f.record(gatewayv1connect.WebhookServiceCreateWebhookEndpointProcedure, req.Header(), req.Msg)
	return connect.NewResponse(&gatewayv1.CreateWebhookEndpointResponse{Endpoint: fakeEndpoint, Secret: "whsec_fake"}), nil
}

func (f *fakeWebhooks) ListWebhookEndpoints(_ context.Context, req *connect.Request[gatewayv1.ListWebhookEndpointsRequest]) (*connect.Response[gatewayv1.ListWebhookEndpointsResponse], error) {
	f.record(gatewayv1connect.WebhookServiceListWebhookEndpointsProcedure, req.Header(), req.Msg)
	return connect.NewResponse(&gatewayv1.ListWebhookEndpointsResponse{Endpoints: []*gatewayv1.WebhookEndpoint{fakeEndpoint}}), nil
}

func (f *fakeWebhooks) DeleteWebhookEndpoint(_ context.Context, req *connect.Request[gatewayv1.DeleteWebhookEndpointRequest]) (*connect.Response[gatewayv1.DeleteWebhookEndpointResponse], error) {
	f.record(gatewayv1connect.WebhookServiceDeleteWebhookEndpointProcedure, req.Header(), req.Msg)
	return connect.NewResponse(&gatewayv1.DeleteWebhookEndpointResponse{}), nil
}

func (f *fakeWebhooks) DisableWebhookEndpoint(_ context.Context, req *connect.Request[gatewayv1.DisableWebhookEndpointRequest]) (*connect.Response[gatewayv1.DisableWebhookEndpointResponse], error) {
	f.record(gatewayv1connect.WebhookServiceDisableWebhookEndpointProcedure, req.Header(), req.Msg)
	return connect.NewResponse(&gatewayv1.DisableWebhookEndpointResponse{Endpoint: fakeEndpoint}), nil
}

func (f *fakeWebhooks) RotateWebhookSecret(_ context.Context, req *connect.Request[gatewayv1.RotateWebhookSecretRequest]) (*connect.Response[gatewayv1.RotateWebhookSecretResponse], error) {
	f.record(gatewayv1connect.WebhookServiceRotateWebhookSecretProcedure, req.Header(), req.Msg)
	return connect.NewResponse(&gatewayv1.RotateWebhookSecretResponse{Endpoint: fakeEndpoint, Secret: "whsec_fake2"}), nil
}

func (f *fakeWebhooks) ListWebhookDeliveries(_ context.Context, req *connect.Request[gatewayv1.ListWebhookDeliveriesRequest]) (*connect.Response[gatewayv1.ListWebhookDeliveriesResponse], error) {
	f.record(gatewayv1connect.WebhookServiceListWebhookDeliveriesProcedure, req.Header(), req.Msg)
	// Three deliveries in pages of page_size, the token being the index of the next one.
	all := []string{"wd_3", "wd_2", "wd_1"}
	start := 0
	if req.Msg.GetPageToken() != "" {
		start = int(req.Msg.GetPageToken()[0] - '0')
	}
	end := min(start+int(req.Msg.GetPageSize()), len(all))
	resp := &gatewayv1.ListWebhookDeliveriesResponse{}
	for _, id := range all[start:end] {
		resp.Deliveries = append(resp.Deliveries, &gatewayv1.WebhookDelivery{DeliveryId: id})
	}
	if end < len(all) {
		resp.NextPageToken = string(rune('0' + end))
	}
	return connect.NewResponse(resp), nil
}

func (f *fakeWebhooks) RedeliverWebhook(_ context.Context, req *connect.Request[gatewayv1.RedeliverWebhookRequest]) (*connect.Response[gatewayv1.RedeliverWebhookResponse], error) {
	f.record(gatewayv1connect.WebhookServiceRedeliverWebhookProcedure, req.Header(), req.Msg)
	return connect.NewResponse(&gatewayv1.RedeliverWebhookResponse{Delivery: &gatewayv1.WebhookDelivery{DeliveryId: req.Msg.GetDeliveryId()}}), nil
}

// newFakeWebhooksServer serves f over HTTP/2 with TLS (httptest's certificate, which every
// httptest server shares, so one client trusts them all).
func newFakeWebhooksServer(t *testing.T, f *fakeWebhooks) *httptest.Server {
	f.calls = map[string]int{}
	mux := http.NewServeMux()
	mux.Handle(gatewayv1connect.NewWebhookServiceHandler(f))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// TestWebhookCallsFailover: of the webhook calls, those that are safe to repeat (the reads,
// Delete, Disable) move on to the next gateway address after reaching one that then failed;
// Create, RotateWebhookSecret and RedeliverWebhook, which would register, rotate or attempt
// twice, do not. Every call carries the token; Create without event types asks for "*",
// RotateWebhookSecret sends the grace period, AllWebhookDeliveries pages to the end; without a
// token nothing is sent.
func TestWebhookCallsFailover(t *testing.T) {
	t.Parallel()
	dying, good := &fakeWebhooks{abort: true}, &fakeWebhooks{}
	a, b := newFakeWebhooksServer(t, dying), newFakeWebhooksServer(t, good)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	anon, err := client.NewMulti([]string{a.URL, b.URL}, client.WithHTTPClient(a.Client()))
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := anon.ListWebhookEndpoints(ctx); !errors.Is(err, client.ErrNotLoggedIn) {
		t.Errorf("ListWebhookEndpoints without a token: %v, want ErrNotLoggedIn", err)
	}

	newClient := func() *client.Client {
		c, err := client.NewMulti([]string{a.URL, b.URL}, client.WithHTTPClient(a.Client()), client.WithToken("tok"), client.WithFailback(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	sendOnce := map[string]func(*client.Client) error{
		gatewayv1connect.WebhookServiceCreateWebhookEndpointProcedure: func(c *client.Client) error {
			_, _, err := c.CreateWebhookEndpoint(ctx, "https://shop.example/hook")
			return err
		},
		gatewayv1connect.WebhookServiceRotateWebhookSecretProcedure: func(c *client.Client) error {
			_, _, err := c.RotateWebhookSecret(ctx, "we_1", time.Hour)
			return err
		},
		gatewayv1connect.WebhookServiceRedeliverWebhookProcedure: func(c *client.Client) error {
			_, err := c.RedeliverWebhook(ctx, "wd_1")
			return err
		},
	}
	for procedure, call := range sendOnce {
		// A fresh client per call, so that each starts at the dying address.
		if err := call(newClient()); err == nil {
			t.Errorf("%s: no error after the address died with the request", procedure)
		}
		if dying.count(procedure) != 1 || good.count(procedure) != 0 {
			t.Errorf("%s: sent %d times to the first address and %d to the second, want 1 and 0", procedure, dying.count(procedure), good.count(procedure))
		}
	}
	repeatable := map[string]func(*client.Client) error{
		gatewayv1connect.WebhookServiceListWebhookEndpointsProcedure: func(c *client.Client) error {
			eps, err := c.ListWebhookEndpoints(ctx)
			if err == nil && (len(eps) != 1 || eps[0].GetEndpointId() != "we_1") {
				err = errors.New("wrong endpoints")
			}
			return err
		},
		gatewayv1connect.WebhookServiceDeleteWebhookEndpointProcedure: func(c *client.Client) error {
			return c.DeleteWebhookEndpoint(ctx, "we_1")
		},
		gatewayv1connect.WebhookServiceDisableWebhookEndpointProcedure: func(c *client.Client) error {
			_, err := c.DisableWebhookEndpoint(ctx, "we_1")
			return err
		},
		gatewayv1connect.WebhookServiceListWebhookDeliveriesProcedure: func(c *client.Client) error {
			_, err := c.ListWebhookDeliveries(ctx, "we_1", client.WebhookDeliveryQuery{PageSize: 2})
			return err
		},
	}
	for procedure, call := range repeatable {
		if err := call(newClient()); err != nil {
			t.Errorf("%s: %v, want the second address's answer", procedure, err)
		}
		if dying.count(procedure) != 1 || good.count(procedure) != 1 {
			t.Errorf("%s: sent %d times to the first address and %d to the second, want 1 and 1", procedure, dying.count(procedure), good.count(procedure))
		}
	}

	// Against the answering address alone: what the calls send and return.
	c, err := client.New(b.URL, client.WithHTTPClient(b.Client()), client.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ep, secret, err := c.CreateWebhookEndpoint(ctx, "https://shop.example/hook")
	if err != nil || ep.GetEndpointId() != "we_1" || secret != "whsec_fake" {
		t.Fatalf("CreateWebhookEndpoint: %v, %q, %v", ep, secret, err)
	}
	good.mu.Lock()
	req := good.last.(*gatewayv1.CreateWebhookEndpointRequest)
	good.mu.Unlock()
	if got := req.GetEventTypes(); len(got) != 1 || got[0] != client.AllEventTypes || req.GetUrl() != "https://shop.example/hook" {
		t.Errorf("CreateWebhookEndpoint sent %v", req)
	}
	if _, secret, err := c.RotateWebhookSecret(ctx, "we_1", 90*time.Minute); err != nil || secret != "whsec_fake2" {
		t.Fatalf("RotateWebhookSecret: %q, %v", secret, err)
	}
	good.mu.Lock()
	rot := good.last.(*gatewayv1.RotateWebhookSecretRequest)
	good.mu.Unlock()
	if rot.GetEndpointId() != "we_1" || rot.GetPreviousSecretTtl().AsDuration() != 90*time.Minute {
		t.Errorf("RotateWebhookSecret sent %v", rot)
	}
	var ids []string
	for d, err := range c.AllWebhookDeliveries(ctx, "we_1", client.WebhookDeliveryQuery{PageSize: 2}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.GetDeliveryId())
	}
	if len(ids) != 3 || ids[0] != "wd_3" || ids[2] != "wd_1" {
		t.Errorf("AllWebhookDeliveries yielded %v, want wd_3, wd_2, wd_1", ids)
	}
	good.mu.Lock()
	defer good.mu.Unlock()
	for _, h := range good.auth {
		if h != "Bearer tok" {
			t.Errorf("a call carried Authorization %q, want the token", h)
		}
	}
}
