package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/paygate/paygate/client"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// paygate webhooks: the logged-in user's webhook endpoints and their deliveries, through the
// gateway's WebhookService. paygate listen (listen.go) is a local receiver for development.

func init() { register(newWebhooksCommand) }

func newWebhooksCommand(e *env) *ffcli.Command {
	return adminGroup(e, "webhooks", "register URLs that your payments' events are POSTed to; see their deliveries",
		"A webhook endpoint is a URL of yours that the gateway POSTs your payments' events\n"+
			"to (the events 'paygate events' lists), as JSON signed with the endpoint's secret\n"+
			"in the Paygate-Signature header: verify it before trusting the body (the Go\n"+
			"package client/webhook does). Delivery is at least once, in order per payment,\n"+
			"retried with backoff for up to 3 days; receivers de-duplicate by event id. An\n"+
			"endpoint that keeps failing is disabled; 'enable' turns it back on.\n\n"+
			"  paygate webhooks create --url https://shop.example/paygate --events payment.succeeded,payment.failed\n"+
			"  paygate webhooks deliveries we_01JD8ZQ3K4M5N6P7Q8R9S0T1V2\n\n"+
			"To try webhooks on this machine, 'paygate listen' registers a temporary endpoint\n"+
			"and prints the events it receives. Every command prints a table, or one line of\n"+
			"JSON with --json. Exit codes: 0 ok, 1 refused or failed, 2 usage.",
		newWebhooksCreateCommand(e),
		newWebhooksListCommand(e),
		newWebhooksDeleteCommand(e),
		newWebhooksEnableCommand(e, true),
		newWebhooksEnableCommand(e, false),
		newWebhooksRotateCommand(e),
		newWebhooksDeliveriesCommand(e),
		newWebhooksRedeliverCommand(e),
	)
}

// webhookEventTypes are the event types an endpoint may subscribe to, as CreateWebhookEndpoint
// takes them.
var webhookEventTypes = []string{client.AllEventTypes, "payment.created", "payment.succeeded", "payment.failed",
	"payment.refunded", "refund.created", "refund.succeeded", "refund.failed"}

// parseEventTypes reads an --events value: a comma-separated list of event types, or "*".
func parseEventTypes(flagValue string) ([]string, error) {
	types := splitList(flagValue)
	if len(types) == 0 {
		return nil, usageErrorf("--events: give event types (%s), or * for all", strings.Join(webhookEventTypes[1:], ", "))
	}
	for _, t := range types {
		known := false
		for _, k := range webhookEventTypes {
			known = known || t == k
		}
		if !known {
			return nil, usageErrorf("--events: unknown event type %q: want * or some of %s", t, strings.Join(webhookEventTypes[1:], ", "))
		}
	}
	return types, nil
}

// webhookEndpointJSON is an endpoint in --json output.
type webhookEndpointJSON struct {
	EndpointID     string     `json:"endpoint_id"`
	URL            string     `json:"url"`
	EventTypes     []string   `json:"event_types"`
	Status         string     `json:"status"`
	DisabledReason string     `json:"disabled_reason,omitempty"`
	CreateTime     *time.Time `json:"create_time,omitempty"`
	// PreviousSecretExpireTime is until when the previous secret still signs too.
	PreviousSecretExpireTime *time.Time `json:"previous_secret_expire_time,omitempty"`
}

func webhookEndpointToJSON(ep *client.WebhookEndpoint) webhookEndpointJSON {
	out := webhookEndpointJSON{EndpointID: ep.GetEndpointId(), URL: ep.GetUrl(), EventTypes: ep.GetEventTypes(),
		Status:         enumName(ep.GetStatus().String(), "WEBHOOK_ENDPOINT_STATUS_"),
		DisabledReason: ep.GetDisabledReason(), CreateTime: timeOf(ep.GetCreateTime()),
		PreviousSecretExpireTime: timeOf(ep.GetPreviousSecretExpireTime())}
	if out.EventTypes == nil {
		out.EventTypes = []string{}
	}
	return out
}

// endpointStatus is an endpoint's status as the tables show it: "enabled", or "disabled
// (failing)".
func endpointStatus(ep webhookEndpointJSON) string {
	if ep.DisabledReason != "" {
		return ep.Status + " (" + ep.DisabledReason + ")"
	}
	return ep.Status
}

func writeWebhookEndpointsTable(w io.Writer, eps []webhookEndpointJSON) {
	if len(eps) == 0 {
		fmt.Fprintln(w, "no webhook endpoints")
		return
	}
	fmt.Fprintln(w, "ENDPOINT\tURL\tEVENTS\tSTATUS\tCREATED\tPREVIOUS SECRET UNTIL")
	for _, ep := range eps {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", ep.EndpointID, ep.URL, strings.Join(ep.EventTypes, ","), endpointStatus(ep),
			when(ep.CreateTime), when(ep.PreviousSecretExpireTime))
	}
}

// writeWebhookEndpoint prints one endpoint as name and value lines.
func writeWebhookEndpoint(w io.Writer, ep webhookEndpointJSON) {
	fmt.Fprintf(w, "endpoint\t%s\n", ep.EndpointID)
	fmt.Fprintf(w, "url\t%s\n", ep.URL)
	fmt.Fprintf(w, "events\t%s\n", strings.Join(ep.EventTypes, ","))
	fmt.Fprintf(w, "status\t%s\n", endpointStatus(ep))
	if ep.PreviousSecretExpireTime != nil {
		fmt.Fprintf(w, "previous secret until\t%s\n", when(ep.PreviousSecretExpireTime))
	}
}

// printSecret prints a signing secret that the gateway shows once, and says so.
func printSecret(w io.Writer, secret string) {
	fmt.Fprintf(w, "signing secret\t%s\n", secret)
	fmt.Fprintln(w, "\nThe secret is shown this once: store it where your receiver reads it (for example")
	fmt.Fprintln(w, "PAYGATE_WEBHOOK_SECRET), and nowhere in plain text. Lost, it cannot be read back:")
	fmt.Fprintln(w, "make a new one with 'paygate webhooks rotate-secret'.")
}

// webhookFailure is a WebhookService error as the CLI prints it: the client's action and the
// gateway's code and message, its reason, and what to do about the usual ones.
func webhookFailure(err error) error {
	var hint string
	switch client.Reason(err) {
	case client.ReasonWebhookAddressRefused:
		hint = "the gateway does not deliver to private or loopback addresses unless it runs with\n  --webhook-allow-private (as 'paygate dev' does); give a public https URL"
	case client.ReasonInvalidWebhookURL:
		hint = "give an absolute https:// URL with a host (http:// only to a gateway run with --webhook-allow-http, as 'paygate dev' is)"
	case client.ReasonPasswordChangeRequired:
		hint = "run 'paygate change-password' first"
	default:
		switch connect.CodeOf(err) {
		case connect.CodeUnauthenticated:
			hint = "the session ended: run 'paygate login USERNAME'"
		case connect.CodeUnimplemented:
			hint = "this gateway does not serve webhooks (an older version?)"
		}
	}
	if errors.Is(err, client.ErrNotLoggedIn) {
		return errors.New("not logged in: run 'paygate login USERNAME'")
	}
	err = withReason(err)
	if hint != "" {
		return fmt.Errorf("%w\n  %s", err, hint)
	}
	return err
}

// webhookClient connects as the logged-in user.
func (a *adminRun) webhookClient() (*client.Client, error) {
	_, c, err := a.cf.connectLoggedIn()
	return c, err
}

func newWebhooksCreateCommand(e *env) *ffcli.Command {
	var url, events string
	return adminSpec{
		path:  "webhooks create",
		args:  "--url URL [--events TYPE,...] [flags]",
		short: "register a URL for your payments' events; prints its signing secret once",
		long: "Registers URL as a webhook endpoint for the event types of --events (default *,\n" +
			"all of them: " + strings.Join(webhookEventTypes[1:], ", ") + ").\n" +
			"Events from now on are POSTed to it. It prints the endpoint's id and its signing\n" +
			"secret, which the gateway shows this once. The URL must be https:// and public,\n" +
			"unless the gateway allows plain http and private addresses (as 'paygate dev' does).",
		example: "  paygate webhooks create --url https://shop.example/paygate --events payment.succeeded,payment.failed\n" +
			"  endpoint        we_01JD8ZQ3K4M5N6P7Q8R9S0T1V2\n" +
			"  url             https://shop.example/paygate\n" +
			"  events          payment.succeeded,payment.failed\n" +
			"  status          enabled\n" +
			"  signing secret  whsec_...",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&url, "url", "", "where to POST the events: https://HOST[:PORT]/PATH (required)")
			fs.StringVar(&events, "events", client.AllEventTypes, "comma-separated event types to deliver, or * for all")
		},
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if strings.TrimSpace(url) == "" {
				return usageErrorf("--url is required")
			}
			types, err := parseEventTypes(events)
			if err != nil {
				return err
			}
			c, err := a.webhookClient()
			if err != nil {
				return err
			}
			defer c.Close()
			ep, secret, err := c.CreateWebhookEndpoint(ctx, strings.TrimSpace(url), types...)
			if err != nil {
				return webhookFailure(err)
			}
			out := webhookEndpointToJSON(ep)
			return a.output(map[string]any{"endpoint": out, "secret": secret}, func(w io.Writer) {
				writeWebhookEndpoint(w, out)
				printSecret(w, secret)
			})
		},
	}.command(e)
}

func newWebhooksListCommand(e *env) *ffcli.Command {
	return adminSpec{
		path:  "webhooks list",
		args:  "[flags]",
		short: "list your webhook endpoints, oldest first",
		long: "Lists your endpoints: id, URL, event types, status (enabled, or disabled with\n" +
			"why: disabled_by_user, or failing when its deliveries kept failing for days), when\n" +
			"it was made, and until when a rotated secret's predecessor still signs.",
		example: "  paygate webhooks list\n" +
			"  ENDPOINT                       URL                           EVENTS  STATUS   CREATED              PREVIOUS SECRET UNTIL\n" +
			"  we_01JD8ZQ3K4M5N6P7Q8R9S0T1V2  https://shop.example/paygate  *       enabled  2026-12-01 21:04:05  -",
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			c, err := a.webhookClient()
			if err != nil {
				return err
			}
			defer c.Close()
			eps, err := c.ListWebhookEndpoints(ctx)
			if err != nil {
				return webhookFailure(err)
			}
			out := struct {
				Endpoints []webhookEndpointJSON `json:"endpoints"`
			}{Endpoints: []webhookEndpointJSON{}}
			for _, ep := range eps {
				out.Endpoints = append(out.Endpoints, webhookEndpointToJSON(ep))
			}
			return a.output(out, func(w io.Writer) { writeWebhookEndpointsTable(w, out.Endpoints) })
		},
	}.command(e)
}

func newWebhooksDeleteCommand(e *env) *ffcli.Command {
	return adminSpec{
		path:    "webhooks delete",
		args:    "[flags] ENDPOINT_ID",
		short:   "remove an endpoint; its pending deliveries are dropped",
		long:    "Removes the endpoint: nothing more is sent to it, and its pending deliveries are\ndropped. To stop delivery for a while and keep the events, use 'disable'.",
		example: "  paygate webhooks delete we_01JD8ZQ3K4M5N6P7Q8R9S0T1V2\n  deleted we_01JD8ZQ3K4M5N6P7Q8R9S0T1V2",
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args, "ENDPOINT_ID"); err != nil {
				return err
			}
			c, err := a.webhookClient()
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.DeleteWebhookEndpoint(ctx, args[0]); err != nil {
				return webhookFailure(err)
			}
			return a.output(map[string]any{"deleted": args[0]}, func(w io.Writer) {
				fmt.Fprintf(w, "deleted %s\n", args[0])
			})
		},
	}.command(e)
}

// newWebhooksEnableCommand is `webhooks enable` (enable) or `webhooks disable`.
func newWebhooksEnableCommand(e *env, enable bool) *ffcli.Command {
	spec := adminSpec{
		path:    "webhooks enable",
		args:    "[flags] ENDPOINT_ID",
		short:   "turn delivery to an endpoint back on; its pending deliveries resume at once",
		long:    "Enables an endpoint disabled by 'disable' or by the gateway (its deliveries kept\nfailing): the deliveries that were pending are sent at once, in order per payment.",
		example: "  paygate webhooks enable we_01JD8ZQ3K4M5N6P7Q8R9S0T1V2\n  enabled we_01JD8ZQ3K4M5N6P7Q8R9S0T1V2",
	}
	verb := "enabled"
	if !enable {
		spec.path = "webhooks disable"
		spec.short = "stop delivery to an endpoint for now; its events are kept for it"
		spec.long = "Disables an endpoint: nothing is sent to it, but its events go on being recorded\nand are delivered once it is enabled again ('enable')."
		spec.example = "  paygate webhooks disable we_01JD8ZQ3K4M5N6P7Q8R9S0T1V2\n  disabled we_01JD8ZQ3K4M5N6P7Q8R9S0T1V2"
		verb = "disabled"
	}
	spec.run = func(ctx context.Context, a *adminRun, args []string) error {
		if err := wantArgs(args, "ENDPOINT_ID"); err != nil {
			return err
		}
		c, err := a.webhookClient()
		if err != nil {
			return err
		}
		defer c.Close()
		f := c.EnableWebhookEndpoint
		if !enable {
			f = c.DisableWebhookEndpoint
		}
		ep, err := f(ctx, args[0])
		if err != nil {
			return webhookFailure(err)
		}
		out := webhookEndpointToJSON(ep)
		return a.output(map[string]any{"endpoint": out}, func(w io.Writer) {
			fmt.Fprintf(w, "%s %s\n", verb, out.EndpointID)
		})
	}
	return spec.command(e)
}

// maxKeepPrevious is the longest grace period of a rotated secret (RotateWebhookSecret).
const maxKeepPrevious = 24 * time.Hour

func newWebhooksRotateCommand(e *env) *ffcli.Command {
	var keep time.Duration
	return adminSpec{
		path:  "webhooks rotate-secret",
		args:  "[--keep-previous DURATION] [flags] ENDPOINT_ID",
		short: "give an endpoint a new signing secret; prints it once",
		long: "Makes a new signing secret for the endpoint and prints it, once. With\n" +
			"--keep-previous the old secret keeps signing too for that long (at most 24h):\n" +
			"each request then carries a v1 signature for each secret, so a receiver still on\n" +
			"the old one goes on verifying until you give it the new one. Without it the old\n" +
			"secret stops at once.",
		example: "  paygate webhooks rotate-secret --keep-previous 1h we_01JD8ZQ3K4M5N6P7Q8R9S0T1V2",
		flags: func(fs *flag.FlagSet) {
			fs.DurationVar(&keep, "keep-previous", 0, "how long the old secret keeps signing beside the new one, up to 24h (default: it stops now)")
		},
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args, "ENDPOINT_ID"); err != nil {
				return err
			}
			if keep < 0 || keep > maxKeepPrevious {
				return usageErrorf("--keep-previous %s: want 0 to 24h", keep)
			}
			c, err := a.webhookClient()
			if err != nil {
				return err
			}
			defer c.Close()
			ep, secret, err := c.RotateWebhookSecret(ctx, args[0], keep)
			if err != nil {
				return webhookFailure(err)
			}
			out := webhookEndpointToJSON(ep)
			return a.output(map[string]any{"endpoint": out, "secret": secret}, func(w io.Writer) {
				writeWebhookEndpoint(w, out)
				if out.PreviousSecretExpireTime == nil {
					fmt.Fprintln(w, "previous secret\tno longer signs")
				}
				printSecret(w, secret)
			})
		},
	}.command(e)
}

// deliveryStatus reads a --status value of the deliveries.
func deliveryStatus(s string) (gatewayv1.WebhookDeliveryStatus, error) {
	switch s {
	case "":
		return gatewayv1.WebhookDeliveryStatus_WEBHOOK_DELIVERY_STATUS_UNSPECIFIED, nil
	case "pending":
		return gatewayv1.WebhookDeliveryStatus_WEBHOOK_DELIVERY_STATUS_PENDING, nil
	case "succeeded":
		return gatewayv1.WebhookDeliveryStatus_WEBHOOK_DELIVERY_STATUS_SUCCEEDED, nil
	case "failed":
		return gatewayv1.WebhookDeliveryStatus_WEBHOOK_DELIVERY_STATUS_FAILED, nil
	}
	return 0, usageErrorf("--status %q: want pending, succeeded or failed", s)
}

// webhookAttemptJSON is a delivery attempt in --json output.
type webhookAttemptJSON struct {
	AttemptTime *time.Time `json:"attempt_time,omitempty"`
	HTTPStatus  int32      `json:"http_status"`
	Error       string     `json:"error,omitempty"`
	LatencyMS   float64    `json:"latency_ms"`
	Manual      bool       `json:"manual,omitempty"`
}

// webhookDeliveryJSON is a delivery in --json output.
type webhookDeliveryJSON struct {
	DeliveryID      string               `json:"delivery_id"`
	EndpointID      string               `json:"endpoint_id"`
	EventID         string               `json:"event_id"`
	EventType       string               `json:"event_type"`
	EventSeq        int64                `json:"event_seq"`
	PaymentID       string               `json:"payment_id"`
	Status          string               `json:"status"`
	NextAttemptTime *time.Time           `json:"next_attempt_time,omitempty"`
	CreateTime      *time.Time           `json:"create_time,omitempty"`
	Attempts        []webhookAttemptJSON `json:"attempts"`
}

func webhookDeliveryToJSON(d *client.WebhookDelivery) webhookDeliveryJSON {
	out := webhookDeliveryJSON{DeliveryID: d.GetDeliveryId(), EndpointID: d.GetEndpointId(), EventID: d.GetEventId(),
		EventType: d.GetEventType(), EventSeq: d.GetEventSeq(), PaymentID: d.GetPaymentId(),
		Status:          enumName(d.GetStatus().String(), "WEBHOOK_DELIVERY_STATUS_"),
		NextAttemptTime: timeOf(d.GetNextAttemptTime()), CreateTime: timeOf(d.GetCreateTime()),
		Attempts: []webhookAttemptJSON{}}
	for _, at := range d.GetAttempts() {
		out.Attempts = append(out.Attempts, webhookAttemptJSON{AttemptTime: timeOf(at.GetAttemptTime()), HTTPStatus: at.GetHttpStatus(),
			Error: at.GetError(), LatencyMS: float64(at.GetLatency().AsDuration().Microseconds()) / 1000, Manual: at.GetManual()})
	}
	return out
}

// attemptSummary is an attempt in a few words: "200 in 12ms", "503: upstream down", "no
// answer: dial tcp ...: connection refused", cut to fit a table.
func attemptSummary(at webhookAttemptJSON) string {
	if at.Error == fmt.Sprintf("HTTP %d", at.HTTPStatus) {
		at.Error = "" // the gateway's words for an answer without a body: nothing more
	}
	var s string
	switch {
	case at.HTTPStatus != 0 && at.Error != "":
		s = fmt.Sprintf("%d: %s", at.HTTPStatus, at.Error)
	case at.HTTPStatus != 0:
		s = fmt.Sprintf("%d in %s", at.HTTPStatus, time.Duration(at.LatencyMS*float64(time.Millisecond)).Round(time.Millisecond))
	case at.Error != "":
		s = "no answer: " + at.Error
	default:
		s = "no answer"
	}
	if at.Manual {
		s = "(redelivery) " + s
	}
	s = strings.Join(strings.Fields(s), " ") // one line
	if r := []rune(s); len(r) > 60 {
		s = string(r[:59]) + "…"
	}
	return s
}

func writeWebhookDeliveriesTable(w io.Writer, ds []webhookDeliveryJSON) {
	if len(ds) == 0 {
		fmt.Fprintln(w, "no deliveries")
		return
	}
	fmt.Fprintln(w, "DELIVERY\tEVENT\tTYPE\tPAYMENT\tSTATUS\tATTEMPTS\tLAST\tNEXT ATTEMPT")
	for _, d := range ds {
		last := "-"
		if n := len(d.Attempts); n > 0 {
			last = attemptSummary(d.Attempts[n-1])
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.DeliveryID, d.EventID, d.EventType, orDash(d.PaymentID), d.Status,
			len(d.Attempts), last, when(d.NextAttemptTime))
	}
}

func newWebhooksDeliveriesCommand(e *env) *ffcli.Command {
	var pg paging
	var status string
	var all bool
	return adminSpec{
		path:  "webhooks deliveries",
		args:  "[--status pending|succeeded|failed] [--limit N] [flags] ENDPOINT_ID",
		short: "list an endpoint's deliveries, newest first, with their attempts",
		long: "Lists the endpoint's deliveries newest first: the delivery, its event (id and\n" +
			"type), the payment, its status (pending, succeeded, failed), how many attempts\n" +
			"were made, the last one's answer (HTTP status, or the error without one) and\n" +
			"when the next attempt is due. --json shows every attempt. A failed delivery can\n" +
			"be sent again with 'paygate webhooks redeliver DELIVERY_ID'.",
		example: "  paygate webhooks deliveries --status failed we_01JD8ZQ3K4M5N6P7Q8R9S0T1V2\n" +
			"  DELIVERY                       EVENT   TYPE               PAYMENT                               STATUS  ATTEMPTS  LAST                          NEXT ATTEMPT\n" +
			"  wd_01JD8ZS5B6C7D8E9F0G1H2J3K4  evt_42  payment.succeeded  0198c2d4-7f1e-7c3a-9b61-2f0e8d5a4c11  failed  23        no answer: connection refused  -",
		flags: func(fs *flag.FlagSet) {
			pg.register(fs, 20, 100)
			fs.StringVar(&status, "status", "", "only deliveries with this status: pending, succeeded or failed")
			fs.BoolVar(&all, "all", false, "fetch every page")
		},
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args, "ENDPOINT_ID"); err != nil {
				return err
			}
			if err := pg.check(); err != nil {
				return err
			}
			st, err := deliveryStatus(status)
			if err != nil {
				return err
			}
			c, err := a.webhookClient()
			if err != nil {
				return err
			}
			defer c.Close()
			q := client.WebhookDeliveryQuery{PageSize: pg.limit, PageToken: pg.token, Status: st}
			out := struct {
				Deliveries    []webhookDeliveryJSON `json:"deliveries"`
				NextPageToken string                `json:"next_page_token"`
			}{Deliveries: []webhookDeliveryJSON{}}
			for {
				page, err := c.ListWebhookDeliveries(ctx, args[0], q)
				if err != nil {
					return webhookFailure(err)
				}
				for _, d := range page.Deliveries {
					out.Deliveries = append(out.Deliveries, webhookDeliveryToJSON(d))
				}
				out.NextPageToken = page.NextPageToken
				if !all || page.NextPageToken == "" {
					break
				}
				q.PageToken = page.NextPageToken
			}
			return a.output(out, func(w io.Writer) {
				writeWebhookDeliveriesTable(w, out.Deliveries)
				pg.next(w, out.NextPageToken)
			})
		},
	}.command(e)
}

func newWebhooksRedeliverCommand(e *env) *ffcli.Command {
	return adminSpec{
		path:  "webhooks redeliver",
		args:  "[flags] DELIVERY_ID",
		short: "send a delivery again now, whatever its status",
		long: "Sends the delivery's event to its endpoint again now, as a new attempt, and\n" +
			"prints how the endpoint answered. The endpoint may thus get the event once more:\n" +
			"receivers de-duplicate by event id. Exit code 1 when the endpoint did not answer\n" +
			"2xx (the delivery keeps its retries, if it had any left).",
		example: "  paygate webhooks redeliver wd_01JD8ZS5B6C7D8E9F0G1H2J3K4\n" +
			"  redelivered wd_01JD8ZS5B6C7D8E9F0G1H2J3K4 (evt_42 payment.succeeded): 200 in 14ms; status succeeded",
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args, "DELIVERY_ID"); err != nil {
				return err
			}
			c, err := a.webhookClient()
			if err != nil {
				return err
			}
			defer c.Close()
			d, err := c.RedeliverWebhook(ctx, args[0])
			if err != nil {
				return webhookFailure(err)
			}
			out := webhookDeliveryToJSON(d)
			var last webhookAttemptJSON
			if n := len(out.Attempts); n > 0 {
				last = out.Attempts[n-1]
			}
			if err := a.output(map[string]any{"delivery": out}, func(w io.Writer) {
				fmt.Fprintf(w, "redelivered %s (%s %s): %s; status %s\n", out.DeliveryID, out.EventID, out.EventType,
					attemptSummary(last), out.Status)
			}); err != nil {
				return err
			}
			if last.HTTPStatus < 200 || last.HTTPStatus > 299 {
				return &exitError{code: exitFailure, msg: "webhooks redeliver: the endpoint did not accept it (no 2xx answer)"}
			}
			return nil
		},
	}.command(e)
}
