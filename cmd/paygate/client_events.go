package main

import (
	"context"
	"fmt"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/paygate/paygate/client"
)

func init() {
	register(newEventsCommand)
}

// eventJSON is an event as paygate events and paygate watch --json print it: the payment's
// fields, with the event's.
type eventJSON struct {
	Seq       int64      `json:"seq"`
	EventID   string     `json:"event_id"`
	Type      string     `json:"type"`
	EventTime *time.Time `json:"event_time,omitempty"`
	// Payer is the payment's username: empty when the event is of a payment paid to you.
	Payer string `json:"payer,omitempty"`
	paymentJSON
}

func eventToJSON(ev *client.Event) eventJSON {
	out := eventJSON{Seq: ev.GetSeq(), EventID: ev.GetEventId(), Type: ev.GetType(), Payer: ev.GetPayment().GetUsername(),
		paymentJSON: paymentToJSON(ev.GetPayment())}
	if ev.GetCreateTime() != nil {
		t := ev.GetCreateTime().AsTime()
		out.EventTime = &t
	}
	return out
}

// eventLine is an event on one line: its seq, type and payment.
func eventLine(ev eventJSON) string {
	return fmt.Sprintf("%-6d %-18s %s", ev.Seq, ev.Type, paymentLine(ev.paymentJSON))
}

func newEventsCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "events")
	cf := clientFlags{e: e}
	cf.register(fs)
	after := fs.Int64("after", 0, "only events with a greater seq (0: from the oldest kept)")
	limit := fs.Int("limit", 100, "events per page, 1 to 500")
	all := fs.Bool("all", false, "fetch every page")
	return &ffcli.Command{
		Name:       "events",
		ShortUsage: "paygate events [--after N] [--limit N] [--all] [flags]",
		ShortHelp:  "list your payments' events (the gateway's event log), oldest first",
		LongHelp: "Lists the events of your payments and of payments paid to your accounts, oldest\n" +
			"first, one line each: seq, type (payment.created, payment.succeeded,\n" +
			"payment.failed) and the payment as of the change. A page that is not the last\n" +
			"ends with the command that fetches the next one; --all fetches them all. Pass\n" +
			"the last seq you saw to --after (here or to 'paygate watch') to go on from there.\n" +
			"\n" +
			"Example:\n" +
			"  paygate events --after 40 --limit 2\n" +
			"  41     payment.created    processing 0198c2d4-7f1e-7c3a-9b61-2f0e8d5a4c11  bank1-1001 -> bank2-2002  5.00 USD\n" +
			"  42     payment.succeeded  succeeded  0198c2d4-7f1e-7c3a-9b61-2f0e8d5a4c11  bank1-1001 -> bank2-2002  5.00 USD\n" +
			"  next page: paygate events --after 42 --limit 2",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if *limit < 1 || *limit > 500 {
				return usageErrorf("--limit %d: want 1 to 500", *limit)
			}
			if *after < 0 {
				return usageErrorf("--after %d: want 0 or more", *after)
			}
			_, c, err := cf.connectLoggedIn()
			if err != nil {
				return err
			}
			defer c.Close()
			out := struct {
				Events    []eventJSON `json:"events"`
				NextAfter int64       `json:"next_after"`
				HasMore   bool        `json:"has_more"`
			}{Events: []eventJSON{}, NextAfter: *after}
			for {
				page, err := c.ListEvents(ctx, out.NextAfter, *limit)
				if err != nil {
					return err
				}
				for _, ev := range page.Events {
					out.Events = append(out.Events, eventToJSON(ev))
				}
				out.NextAfter, out.HasMore = page.NextAfter, page.HasMore
				if !*all || !page.HasMore {
					break
				}
			}
			if cf.json {
				return printJSON(e.stdout, out)
			}
			for _, ev := range out.Events {
				fmt.Fprintln(e.stdout, eventLine(ev))
			}
			if len(out.Events) == 0 {
				fmt.Fprintln(e.stdout, "no events")
			}
			if out.HasMore {
				fmt.Fprintf(e.stdout, "next page: paygate events --after %d --limit %d\n", out.NextAfter, *limit)
			}
			return nil
		},
	}
}
