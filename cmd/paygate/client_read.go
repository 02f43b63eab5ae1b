package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/paygate/paygate/client"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

func init() {
	register(newBalanceCommand)
	register(newHistoryCommand)
	register(newWatchCommand)
}

func newBalanceCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "balance")
	cf := clientFlags{e: e}
	cf.register(fs)
	return &ffcli.Command{
		Name:       "balance",
		ShortUsage: "paygate balance [flags]",
		ShortHelp:  "show your accounts at every bank and totals per currency",
		LongHelp: "Lists each of your accounts with its balance, the amount held by payments in\n" +
			"progress and what is available, per bank, and totals per currency. A bank that\n" +
			"does not answer is shown as unavailable and its accounts without figures.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			_, c, err := cf.connectLoggedIn()
			if err != nil {
				return err
			}
			defer c.Close()
			b, err := c.Balance(ctx)
			if err != nil {
				return err
			}
			if cf.json {
				type acct struct {
					Bank      string `json:"bank"`
					Status    string `json:"status"`
					Account   string `json:"account_id"`
					Currency  string `json:"currency,omitempty"`
					Balance   int64  `json:"balance"`
					Held      int64  `json:"held"`
					Available int64  `json:"available"`
				}
				type tot struct {
					Currency  string `json:"currency"`
					Balance   int64  `json:"balance"`
					Available int64  `json:"available"`
					Partial   bool   `json:"partial,omitempty"`
				}
				out := struct {
					Accounts []acct `json:"accounts"`
					Totals   []tot  `json:"totals"`
				}{Accounts: []acct{}, Totals: []tot{}}
				for _, bank := range b.GetBanks() {
					st := strings.ToLower(strings.TrimPrefix(bank.GetStatus().String(), "BANK_STATUS_"))
					for _, a := range bank.GetAccounts() {
						out.Accounts = append(out.Accounts, acct{bank.GetBank(), st, a.GetAccountId(), a.GetCurrency(), a.GetBalance(), a.GetHeld(), a.GetAvailable()})
					}
				}
				for _, t := range b.GetTotals() {
					out.Totals = append(out.Totals, tot{t.GetCurrency(), t.GetBalance(), t.GetAvailable(), t.GetPartial()})
				}
				return printJSON(e.stdout, out)
			}
			fmt.Fprintf(e.stdout, "%-8s %-14s %14s %14s %14s\n", "BANK", "ACCOUNT", "BALANCE", "HELD", "AVAILABLE")
			for _, bank := range b.GetBanks() {
				for _, a := range bank.GetAccounts() {
					if bank.GetStatus() != gatewayv1.BankStatus_BANK_STATUS_AVAILABLE {
						fmt.Fprintf(e.stdout, "%-8s %-14s %s\n", bank.GetBank(), a.GetAccountId(), "unavailable: "+bank.GetError())
						continue
					}
					cur := a.GetCurrency()
					fmt.Fprintf(e.stdout, "%-8s %-14s %14s %14s %14s %s\n", bank.GetBank(), a.GetAccountId(),
						client.FormatAmount(a.GetBalance(), cur), client.FormatAmount(a.GetHeld(), cur), client.FormatAmount(a.GetAvailable(), cur), cur)
				}
			}
			for _, t := range b.GetTotals() {
				note := ""
				if t.GetPartial() {
					note = "  (partial: a bank did not answer)"
				}
				fmt.Fprintf(e.stdout, "%-8s %-14s %14s %14s %14s %s%s\n", "TOTAL", "", client.FormatAmount(t.GetBalance(), t.GetCurrency()), "",
					client.FormatAmount(t.GetAvailable(), t.GetCurrency()), t.GetCurrency(), note)
			}
			return nil
		},
	}
}

func newHistoryCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "history")
	cf := clientFlags{e: e}
	cf.register(fs)
	pageSize := fs.Int("page-size", 20, "payments per page, 1 to 100")
	pageToken := fs.String("page-token", "", "the next-page token printed by the previous page")
	all := fs.Bool("all", false, "fetch every page")
	status := fs.String("status", "", "only payments with this status: processing, succeeded or failed")
	received := fs.Bool("received", false, "list the payments others made to your accounts instead of yours")
	return &ffcli.Command{
		Name:       "history",
		ShortUsage: "paygate history [--received] [flags]",
		ShortHelp:  "list your payments, or those paid to you, newest first, a page at a time",
		LongHelp: "Lists your payments newest first. Each page ends with the command that fetches\n" +
			"the next one; --all fetches them all. Nobody else's payments are ever listed.\n" +
			"\n" +
			"--received lists instead the payments others made to your accounts (refunds of\n" +
			"your payments among them), with how much of each is refunded already, without\n" +
			"who paid: pick one there to give money back with 'paygate refund'.\n" +
			"\n" +
			"Example:\n" +
			"  paygate history --received --status succeeded\n" +
			"  2026-12-01 21:04:05  succeeded  0198c2d4-7f1e-7c3a-9b61-2f0e8d5a4c11  bank1-1001 -> bank2-2002  40.00 USD  refunded 12.50\n" +
			"  paygate refund 0198c2d4-7f1e-7c3a-9b61-2f0e8d5a4c11 --amount 27.50",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if *pageSize < 1 || *pageSize > 100 {
				return usageErrorf("--page-size %d: want 1 to 100", *pageSize)
			}
			var st gatewayv1.PaymentStatus
			switch *status {
			case "":
			case "processing":
				st = gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING
			case "succeeded":
				st = gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED
			case "failed":
				st = gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED
			default:
				return usageErrorf("--status %q: want processing, succeeded or failed", *status)
			}
			_, c, err := cf.connectLoggedIn()
			if err != nil {
				return err
			}
			defer c.Close()
			q := client.HistoryQuery{PageSize: *pageSize, PageToken: *pageToken, Status: st, Received: *received}
			out := struct {
				Payments      []paymentJSON `json:"payments"`
				NextPageToken string        `json:"next_page_token"`
			}{Payments: []paymentJSON{}}
			for {
				page, err := c.History(ctx, q)
				if err != nil {
					return err
				}
				for _, p := range page.Payments {
					out.Payments = append(out.Payments, paymentToJSON(p))
				}
				out.NextPageToken = page.NextPageToken
				if !*all || page.NextPageToken == "" {
					break
				}
				q.PageToken = page.NextPageToken
			}
			if cf.json {
				return printJSON(e.stdout, out)
			}
			for _, p := range out.Payments {
				when := ""
				if p.CreateTime != nil {
					when = p.CreateTime.Local().Format(time.DateTime) + "  "
				}
				fmt.Fprintln(e.stdout, when+paymentLine(p))
			}
			if len(out.Payments) == 0 {
				if *received {
					fmt.Fprintln(e.stdout, "no payments received")
				} else {
					fmt.Fprintln(e.stdout, "no payments")
				}
			}
			if out.NextPageToken != "" {
				// The next page's command repeats the listing's flags: a token fetches
				// only the next page of its own listing.
				next := fmt.Sprintf("paygate history --page-size %d", *pageSize)
				if *received {
					next += " --received"
				}
				if *status != "" {
					next += " --status " + *status
				}
				fmt.Fprintf(e.stdout, "next page: %s --page-token %s\n", next, out.NextPageToken)
			}
			return nil
		},
	}
}

func newWatchCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "watch")
	cf := clientFlags{e: e}
	cf.register(fs)
	duration := fs.Duration("for", 0, "stop after this long (default: until Ctrl-C)")
	noSend := fs.Bool("no-send", false, "do not deliver queued payments while watching")
	after := fs.Int64("after", -1, "first replay your events with a greater seq (see 'paygate events'), then follow")
	return &ffcli.Command{
		Name:       "watch",
		ShortUsage: "paygate watch [--after N] [flags]",
		ShortHelp:  "stream your payments' status changes; deliver queued payments meanwhile",
		LongHelp: "Prints outcomes of queued payments not reported yet, then every change of your\n" +
			"payments and of payments paid to your accounts as it happens, one line each\n" +
			"ending with the event's seq (--json: one JSON object per line, with seq, event_id\n" +
			"and type). Meanwhile it delivers the offline queue, so it can run in the\n" +
			"background. It reconnects when the gateway restarts (or to another replica) and\n" +
			"goes on after the last event it printed: nothing is missed or printed twice.\n" +
			"--after N first replays the events after seq N: pass the last seq a previous\n" +
			"watch printed to go on from there. Ctrl-C stops it (exit 0).\n" +
			"\n" +
			"Example:\n" +
			"  paygate watch --after 41\n" +
			"  21:04:05  succeeded  0198c2d4-7f1e-7c3a-9b61-2f0e8d5a4c11  bank1-1001 -> bank2-2002  5.00 USD  seq 42",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if *after < -1 {
				return usageErrorf("--after %d: want 0 or more", *after)
			}
			s, err := cf.loggedIn()
			if err != nil {
				return err
			}
			if *duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, *duration)
				defer cancel()
			}
			var mu sync.Mutex
			seen := map[string]bool{}
			// show prints a queued payment's outcome once (the stream's event of the same
			// change is then not shown again).
			show := func(p paymentJSON) {
				mu.Lock()
				defer mu.Unlock()
				key := p.PaymentID + "/" + p.Status
				if seen[key] {
					return
				}
				seen[key] = true
				if cf.json {
					printJSON(e.stdout, p)
					return
				}
				fmt.Fprintln(e.stdout, time.Now().Format(time.TimeOnly)+"  queued payment settled: "+paymentLine(p))
			}
			// showEvent prints an event of the stream, unless it is the decision of a queued
			// payment shown already. (An adopted payment's created event shows it failed
			// already: only decisions count as outcomes.)
			showEvent := func(ev eventJSON) {
				mu.Lock()
				defer mu.Unlock()
				if ev.Type != "payment.created" {
					key := ev.PaymentID + "/" + ev.Status
					if seen[key] {
						return
					}
					seen[key] = true
				}
				if cf.json {
					printJSON(e.stdout, ev)
					return
				}
				fmt.Fprintf(e.stdout, "%s  %s  seq %d\n", time.Now().Format(time.TimeOnly), paymentLine(ev.paymentJSON), ev.Seq)
			}
			c, _, err := cf.connect(s, true, *noSend, client.WithOutcomes(func(r client.Result) { show(resultToJSON(r)) }))
			if err != nil {
				return err
			}
			defer c.Close()
			if list, err := c.Queue().Unreported(ctx); err == nil {
				var ids []string
				for _, p := range list {
					show(resultToJSON(p.Result))
					ids = append(ids, p.Request.ID)
				}
				c.Queue().MarkReported(ctx, ids...)
			}
			if !cf.json {
				fmt.Fprintln(e.stderr, "watching payments of "+s.Username+" (Ctrl-C to stop)")
			}
			for ev, err := range c.WatchFrom(ctx, *after) {
				if err != nil {
					if errors.Is(err, client.ErrLoginRequired) {
						return errors.New("the gateway refused the token: run 'paygate login USERNAME'")
					}
					return err
				}
				showEvent(eventToJSON(ev))
			}
			return nil
		},
	}
}
