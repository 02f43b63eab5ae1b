package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/pki"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
)

// The gateway's public unary procedures, and its one server stream.
var publicUnary = []string{
	gatewayv1connect.AuthServiceLoginProcedure,
	gatewayv1connect.AuthServiceLogoutProcedure,
	gatewayv1connect.AuthServiceRegisterProcedure,
	gatewayv1connect.PaymentServiceExecutePaymentProcedure,
	gatewayv1connect.PaymentServiceGetPaymentProcedure,
	gatewayv1connect.PaymentServiceListPaymentsProcedure,
	gatewayv1connect.PaymentServiceListEventsProcedure,
	gatewayv1connect.PaymentServiceRefundPaymentProcedure,
	gatewayv1connect.BalanceServiceFetchBalanceProcedure,
	gatewayv1connect.WebhookServiceCreateWebhookEndpointProcedure,
	gatewayv1connect.WebhookServiceListWebhookEndpointsProcedure,
	gatewayv1connect.WebhookServiceDeleteWebhookEndpointProcedure,
	gatewayv1connect.WebhookServiceEnableWebhookEndpointProcedure,
	gatewayv1connect.WebhookServiceDisableWebhookEndpointProcedure,
	gatewayv1connect.WebhookServiceRotateWebhookSecretProcedure,
	gatewayv1connect.WebhookServiceListWebhookDeliveriesProcedure,
	gatewayv1connect.WebhookServiceRedeliverWebhookProcedure,
}

// rawCall posts body to procedure on the gateway's API listener with the client certificate
// and alice's token, and returns the response with its body read.
func rawCall(t *testing.T, hc *http.Client, c *cluster.Cluster, token, procedure, contentType string, body []byte, grpc bool) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t, 15*time.Second), http.MethodPost, "https://"+c.GatewayAddr+procedure, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+token)
	if grpc {
		req.Header.Set("TE", "trailers")
	} else if strings.HasPrefix(contentType, "application/json") {
		req.Header.Set("Connect-Protocol-Version", "1")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", procedure, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", procedure, err)
	}
	return resp, data
}

// grpcFrame wraps msg in the 5-byte length-prefixed frame of gRPC and Connect streaming.
func grpcFrame(flags byte, msg []byte) []byte {
	out := make([]byte, 5, 5+len(msg))
	out[0] = flags
	binary.BigEndian.PutUint32(out[1:], uint32(len(msg)))
	return append(out, msg...)
}

// connectErrorCode returns the "code" of a Connect error body (unary) or end-of-stream message.
func connectErrorCode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Code  string `json:"code"`
		Error *struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if e.Error != nil {
		return e.Error.Code
	}
	return e.Code
}

// TestBadInput sends the gateway malformed JSON and protobuf on every public procedure,
// oversized messages, and out-of-range amounts and ids through the Go client. Each is refused
// with the code connect-go gives it, and nothing changes in the ledgers or in the user's
// history.
func TestBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	t.Parallel()
	c := cluster.New(t, cluster.Options{})
	tlsCfg, err := pki.ClientTLS(c.CertPath("ca.pem"), c.CertPath("client-cli.pem"), c.CertPath("client-cli-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	hc := rpcserver.NewHTTPClient(tlsCfg)
	alice := login(t, c, "alice")
	before := audit(t, c)
	history := func() int {
		resp, err := alice.Payments.ListPayments(ctxT(t, 10*time.Second), connect.NewRequest(&gatewayv1.ListPaymentsRequest{PageSize: 100}))
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.Msg.GetPayments())
	}
	historyBefore := history()

	t.Run("malformed JSON", func(t *testing.T) {
		// Bodies that no message decodes from. (Unknown fields are discarded by the JSON codec,
		// so a well-formed object with other fields is a valid empty request.)
		bodies := []string{`{`, `not json`, `[1,2]`, "\x00\xff\xfe", `{"a": }`, `"str"`, `{"paymentId": 5, `}
		type call struct{ proc, body string }
		var calls []call
		for _, proc := range publicUnary {
			for _, b := range bodies {
				calls = append(calls, call{proc, b})
			}
		}
		// Fields of the wrong type.
		calls = append(calls,
			call{gatewayv1connect.PaymentServiceExecutePaymentProcedure, `{"amount": "ten"}`},
			call{gatewayv1connect.PaymentServiceExecutePaymentProcedure, `{"paymentId": 5}`},
			call{gatewayv1connect.PaymentServiceExecutePaymentProcedure, `{"amount": 1e400}`},
			call{gatewayv1connect.PaymentServiceExecutePaymentProcedure, `{"amount": "99999999999999999999"}`},
			call{gatewayv1connect.AuthServiceLoginProcedure, `{"username": {"$gt": ""}}`},
			call{gatewayv1connect.PaymentServiceListPaymentsProcedure, `{"pageSize": "many"}`},
			call{gatewayv1connect.PaymentServiceListEventsProcedure, `{"after": "the start"}`},
		)
		for _, cl := range calls {
			proc, b := cl.proc, cl.body
			resp, data := rawCall(t, hc, c, alice.Token, proc, "application/json", []byte(b), false)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s %q: HTTP %d %s; want 400", proc, b, resp.StatusCode, data)
				continue
			}
			if code := connectErrorCode(t, data); code != "invalid_argument" {
				t.Errorf("%s %q: code %q; want invalid_argument", proc, b, code)
			}
		}
	})

	t.Run("malformed JSON on the stream", func(t *testing.T) {
		for _, b := range []string{`{`, `{"x": [}`, "\xff\xff"} {
			resp, data := rawCall(t, hc, c, alice.Token, gatewayv1connect.PaymentServiceWatchPaymentsProcedure,
				"application/connect+json", grpcFrame(0, []byte(b)), false)
			// A Connect stream answers HTTP 200 and puts the error in its end-of-stream message.
			if resp.StatusCode != http.StatusOK || len(data) < 5 || data[0]&0x02 == 0 {
				t.Errorf("WatchPayments %q: HTTP %d %q; want an end-of-stream message", b, resp.StatusCode, data)
				continue
			}
			if code := connectErrorCode(t, data[5:]); code != "invalid_argument" {
				t.Errorf("WatchPayments %q: code %q; want invalid_argument", b, code)
			}
		}
	})

	t.Run("malformed protobuf", func(t *testing.T) {
		garbage := [][]byte{
			{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f},       // field 1, a length far past the end
			{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, // a tag that never ends
			{0x0f, 0x01}, // wire type 7 does not exist
		}
		type call struct {
			proc string
			msg  []byte
		}
		var calls []call
		for _, proc := range append(publicUnary, gatewayv1connect.PaymentServiceWatchPaymentsProcedure) {
			for _, g := range garbage {
				calls = append(calls, call{proc, g})
			}
		}
		// A string field of invalid UTF-8: to_account (field 3) of ExecutePaymentRequest.
		calls = append(calls, call{gatewayv1connect.PaymentServiceExecutePaymentProcedure, []byte{0x1a, 0x02, 0xc3, 0x28}})
		for _, cl := range calls {
			proc, g := cl.proc, cl.msg
			resp, data := rawCall(t, hc, c, alice.Token, proc, "application/grpc", grpcFrame(0, g), true)
			status := resp.Trailer.Get("Grpc-Status")
			if status == "" {
				status = resp.Header.Get("Grpc-Status") // trailers-only response
			}
			if resp.StatusCode != http.StatusOK || status != strconv.Itoa(int(connect.CodeInvalidArgument)) {
				t.Errorf("%s %x: HTTP %d grpc-status %q (%s) %q; want grpc-status 3 (invalid_argument)", proc, g, resp.StatusCode, status,
					resp.Trailer.Get("Grpc-Message")+resp.Header.Get("Grpc-Message"), data)
			}
		}
	})

	t.Run("message over the size limit", func(t *testing.T) {
		big := strings.Repeat("x", rpcserver.DefaultReadMaxBytes+1)
		// Through the Go client (gRPC protocol).
		_, err := alice.Payments.ExecutePayment(ctxT(t, 15*time.Second), connect.NewRequest(&gatewayv1.ExecutePaymentRequest{
			PaymentId: newID(), FromAccount: "bank1-1001", ToAccount: "bank2-2001", Amount: 100, Currency: "USD", Description: big}))
		if connect.CodeOf(err) != connect.CodeResourceExhausted {
			t.Errorf("gRPC, %d bytes: %v; want resource_exhausted", len(big), err)
		}
		// A Connect unary JSON body.
		body, _ := json.Marshal(map[string]any{"username": "alice", "password": big})
		resp, data := rawCall(t, hc, c, alice.Token, gatewayv1connect.AuthServiceLoginProcedure, "application/json", body, false)
		if code := connectErrorCode(t, data); code != "resource_exhausted" {
			t.Errorf("Connect JSON, %d bytes: HTTP %d code %q; want resource_exhausted", len(body), resp.StatusCode, code)
		}
		// A gRPC frame that only announces more than the limit.
		hdr := grpcFrame(0, nil)
		binary.BigEndian.PutUint32(hdr[1:], uint32(rpcserver.DefaultReadMaxBytes+1))
		resp, _ = rawCall(t, hc, c, alice.Token, gatewayv1connect.PaymentServiceExecutePaymentProcedure, "application/grpc", hdr, true)
		status := resp.Trailer.Get("Grpc-Status") + resp.Header.Get("Grpc-Status")
		if status != strconv.Itoa(int(connect.CodeResourceExhausted)) {
			t.Errorf("gRPC frame announcing %d bytes: grpc-status %q; want 8 (resource_exhausted)", rpcserver.DefaultReadMaxBytes+1, status)
		}
	})

	t.Run("out-of-range fields", func(t *testing.T) {
		valid := func() *gatewayv1.ExecutePaymentRequest {
			return &gatewayv1.ExecutePaymentRequest{PaymentId: newID(), FromAccount: "bank1-1001", ToAccount: "bank2-2001", Amount: 100, Currency: "USD"}
		}
		cases := map[string]func(*gatewayv1.ExecutePaymentRequest){
			"zero amount":           func(r *gatewayv1.ExecutePaymentRequest) { r.Amount = 0 },
			"negative amount":       func(r *gatewayv1.ExecutePaymentRequest) { r.Amount = -100 },
			"amount above 10^15":    func(r *gatewayv1.ExecutePaymentRequest) { r.Amount = 1_000_000_000_000_001 },
			"largest int64":         func(r *gatewayv1.ExecutePaymentRequest) { r.Amount = 1<<63 - 1 },
			"smallest int64":        func(r *gatewayv1.ExecutePaymentRequest) { r.Amount = -1 << 63 },
			"payment_id not a UUID": func(r *gatewayv1.ExecutePaymentRequest) { r.PaymentId = "1; DROP TABLE payments" },
			"empty payment_id":      func(r *gatewayv1.ExecutePaymentRequest) { r.PaymentId = "" },
			"lower-case currency":   func(r *gatewayv1.ExecutePaymentRequest) { r.Currency = "usd" },
			"empty to_account":      func(r *gatewayv1.ExecutePaymentRequest) { r.ToAccount = "" },
			"to_account too long":   func(r *gatewayv1.ExecutePaymentRequest) { r.ToAccount = "bank2-" + strings.Repeat("9", 70) },
			"same account":          func(r *gatewayv1.ExecutePaymentRequest) { r.ToAccount = r.FromAccount },
			"description over 200":  func(r *gatewayv1.ExecutePaymentRequest) { r.Description = strings.Repeat("é", 201) },
		}
		for name, mutate := range cases {
			r := valid()
			mutate(r)
			_, err := alice.Payments.ExecutePayment(ctxT(t, 15*time.Second), connect.NewRequest(r))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("%s: %v; want invalid_argument", name, err)
			} else if rpcerr.Reason(err) != rpcserver.ReasonInvalidArgument {
				t.Errorf("%s: reason %q; want %q", name, rpcerr.Reason(err), rpcserver.ReasonInvalidArgument)
			}
		}
	})

	after := audit(t, c)
	if d := delta(before, after); len(d) != 0 || after.Held != 0 || after.Pending != 0 {
		t.Errorf("bad input changed the ledgers: %v, held %d, pending %d", d, after.Held, after.Pending)
	}
	if n := history(); n != historyBefore {
		t.Errorf("alice's history has %d payments after the bad input, %d before", n, historyBefore)
	}
	// The gateway still serves.
	if _, err := pay(context.Background(), alice, newID(), "bank1-1001", "bank2-2001", 1); err != nil {
		t.Errorf("a good payment after the bad input: %v", err)
	}
}
