package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/paygate/paygate/client"
	"github.com/paygate/paygate/internal/money"
)

func init() {
	register(newPayCommand)
	register(newQueueCommand)
}

func newPayCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "pay")
	cf := clientFlags{e: e}
	cf.register(fs)
	from := fs.String("from", "", "your account to pay from, <bank>-<number>")
	to := fs.String("to", "", "the payee's account, <bank>-<number>")
	amount := fs.String("amount", "", "decimal amount, e.g. 25.00 (converted exactly; no rounding)")
	currency := fs.String("currency", "USD", "ISO 4217 currency code")
	description := fs.String("description", "", "note kept with the payment")
	id := fs.String("id", "", "payment id to reuse (only to retry a payment whose outcome is unknown); default: a new UUIDv7")
	wait := fs.Duration("wait", client.DefaultPayWait, "how long to wait for the outcome before leaving the payment queued")
	return &ffcli.Command{
		Name:       "pay",
		ShortUsage: "paygate pay [flags] --from ACCOUNT --to ACCOUNT --amount 25.00 [--currency USD]",
		ShortHelp:  "pay, exactly once; queue the payment when the gateway is unreachable",
		LongHelp: "Records the payment in the offline queue (STATE/queue.db) with a new id, then\n" +
			"sends it and waits up to --wait for the outcome. If the gateway cannot be\n" +
			"reached the payment stays queued: pay prints 'queued <id>' and exits 0, and\n" +
			"'paygate queue' or 'paygate watch' deliver it later, exactly once.\n\n" +
			"Exit codes: 0 succeeded or queued, 3 refused (failed, e.g. insufficient funds),\n" +
			"2 usage, 1 other errors.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if *from == "" || *to == "" || *amount == "" {
				return usageErrorf("--from, --to and --amount are required")
			}
			minor, err := money.ParseDecimal(*amount, *currency)
			if err != nil {
				return usageErrorf("--amount %s %s: %v", *amount, *currency, err)
			}
			s, err := cf.loggedIn()
			if err != nil {
				return err
			}
			var mu sync.Mutex
			earlier := func(r client.Result) { // older queued payments the sender settles meanwhile
				mu.Lock()
				defer mu.Unlock()
				if cf.json {
					printJSON(e.stdout, map[string]any{"queued_outcome": resultToJSON(r)})
				} else {
					fmt.Fprintf(e.stdout, "queued payment settled: %s\n", paymentLine(resultToJSON(r)))
				}
			}
			c, _, err := cf.connect(s, true, false, client.WithPayWait(*wait), client.WithOutcomes(earlier))
			if err != nil {
				return err
			}
			defer c.Close()
			reportUnreported(ctx, e, c.Queue(), cf.json)

			stopProgress := progressAfter(e, 2*time.Second, "waiting for the gateway's decision...")
			r, err := c.Pay(ctx, client.PaymentRequest{ID: *id, From: *from, To: *to, Amount: minor, Currency: *currency, Description: *description})
			stopProgress()
			mu.Lock()
			defer mu.Unlock()
			if errors.Is(err, client.ErrInvalidPayment) {
				return usageErrorf("%v", err)
			}
			if err != nil {
				return err
			}
			if r.Status != client.StatusQueued {
				c.Queue().MarkReported(ctx, r.ID)
			}
			if cf.json {
				printJSON(e.stdout, resultToJSON(r))
			} else {
				switch r.Status {
				case client.StatusQueued:
					fmt.Fprintf(e.stdout, "queued %s  %s -> %s  %s %s\n  not sent yet (%s); it is kept in %s and sent, exactly once,\n  by 'paygate queue' or 'paygate watch'\n",
						r.ID, r.Request.From, r.Request.To, client.FormatAmount(r.Request.Amount, r.Request.Currency), r.Request.Currency,
						r.Message, c.Queue().Dir())
				default:
					fmt.Fprintln(e.stdout, paymentLine(resultToJSON(r)))
				}
			}
			if r.Status == client.StatusFailed {
				return &exitError{code: exitPaymentFailed}
			}
			return nil
		},
	}
}

// progressAfter prints msg to stderr if the returned stop function is not called within d.
func progressAfter(e *env, d time.Duration, msg string) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-done:
		case <-time.After(d):
			fmt.Fprintln(e.stderr, msg)
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

func newQueueCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "queue")
	cf := clientFlags{e: e}
	cf.register(fs)
	noSend := fs.Bool("no-send", false, "only show the queue; send nothing")
	flush := fs.Bool("flush", false, "keep sending until every queued payment has an outcome (Ctrl-C stops)")
	wait := fs.Duration("wait", 30*time.Second, "without --flush: how long to try sending before showing the queue")
	limit := fs.Int("limit", 20, "how many recent outcomes to show")
	return &ffcli.Command{
		Name:       "queue",
		ShortUsage: "paygate queue [flags] [send]",
		ShortHelp:  "send queued payments and show pending payments and recent outcomes",
		LongHelp: "Sends the payments waiting in the offline queue (each account's in order),\n" +
			"printing each outcome as it lands and progress while it waits, for up to --wait\n" +
			"(or, with --flush or 'paygate queue send', until none is left); then lists what is\n" +
			"still pending and the recent outcomes. --no-send only lists.\n\n" +
			"Exit codes: 0 ok, 3 a payment settled during this run failed, 1 payments are\n" +
			"left after --flush (e.g. the login expired), 2 usage.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 && args[0] == "send" {
				// Flags may follow the verb: paygate queue send --json.
				if err := fs.Parse(args[1:]); err != nil {
					return usageErrorf("%v", err)
				}
				*flush, args = true, fs.Args()
			}
			switch {
			case len(args) > 0:
				return usageErrorf("unexpected arguments: %v", args)
			}
			if *flush && *noSend {
				return usageErrorf("--flush and --no-send contradict each other")
			}
			s, err := cf.loadSession()
			if err != nil {
				return err
			}
			var mu sync.Mutex
			failed := 0
			onOutcome := func(r client.Result) {
				mu.Lock()
				defer mu.Unlock()
				if r.Status == client.StatusFailed {
					failed++
				}
				if cf.json {
					printJSON(e.stdout, map[string]any{"queued_outcome": resultToJSON(r)})
				} else {
					fmt.Fprintf(e.stdout, "queued payment settled: %s\n", paymentLine(resultToJSON(r)))
				}
			}
			send := !*noSend && s.Token != ""
			c, _, err := cf.connect(s, true, !send, client.WithOutcomes(onOutcome))
			if err != nil {
				return err
			}
			defer c.Close()
			q := c.Queue()
			mu.Lock()
			failed += reportUnreported(ctx, e, q, cf.json)
			mu.Unlock()

			var flushErr error
			if send {
				fctx, cancel := ctx, context.CancelFunc(func() {})
				if !*flush {
					fctx, cancel = context.WithTimeout(ctx, *wait)
				}
				flushErr = c.Flush(fctx, func(st client.QueueStats, ss client.SenderState) {
					if st.Queued == 0 {
						return
					}
					line := fmt.Sprintf("sending: %d queued, %d succeeded, %d failed", st.Queued, st.Succeeded, st.Failed)
					switch {
					case !ss.Leader:
						line += " (another paygate process is sending)"
					case ss.Offline:
						line += " (gateway unreachable; probing)"
					case ss.LastError != "":
						line += " (last error: " + ss.LastError + ")"
					}
					fmt.Fprintln(e.stderr, line)
				})
				cancel()
			}
			// Outcomes reported by another process's sender in the meantime.
			mu.Lock()
			failed += reportUnreported(context.WithoutCancel(ctx), e, q, cf.json)
			mu.Unlock()
			if err := showQueue(context.WithoutCancel(ctx), e, c, *limit, cf.json); err != nil {
				return err
			}
			switch {
			case errors.Is(flushErr, client.ErrLoginRequired):
				return errors.New("the gateway refused the token: run 'paygate login USERNAME', then 'paygate queue' again")
			case flushErr != nil && *flush:
				return fmt.Errorf("payments are still queued: %w", flushErr)
			case !*noSend && s.Token == "":
				fmt.Fprintln(e.stderr, "not logged in: nothing was sent; run 'paygate login USERNAME'")
			}
			if failed > 0 {
				return &exitError{code: exitPaymentFailed}
			}
			return nil
		},
	}
}

func showQueue(ctx context.Context, e *env, c *client.Client, limit int, asJSON bool) error {
	q := c.Queue()
	pending, err := q.Pending(ctx)
	if err != nil {
		return err
	}
	recent, err := q.Recent(ctx, limit)
	if err != nil {
		return err
	}
	if asJSON {
		type pendingJSON struct {
			paymentJSON
			Username    string     `json:"username"`
			QueuedAt    time.Time  `json:"queued_at"`
			NextAttempt *time.Time `json:"next_attempt,omitempty"`
			LastError   string     `json:"last_error,omitempty"`
		}
		out := struct {
			Pending []pendingJSON      `json:"pending"`
			Recent  []paymentJSON      `json:"recent"`
			Sender  client.SenderState `json:"sender"`
		}{Pending: []pendingJSON{}, Recent: []paymentJSON{}, Sender: c.SenderState()}
		for _, p := range pending {
			pj := pendingJSON{paymentJSON: resultToJSON(p.Result), Username: p.Username, QueuedAt: p.Created, LastError: p.LastError}
			if !p.NextAttempt.IsZero() {
				pj.NextAttempt = &p.NextAttempt
			}
			out.Pending = append(out.Pending, pj)
		}
		for _, p := range recent {
			out.Recent = append(out.Recent, resultToJSON(p.Result))
		}
		return printJSON(e.stdout, out)
	}
	fmt.Fprintf(e.stdout, "pending (%d):\n", len(pending))
	for _, p := range pending {
		line := fmt.Sprintf("  %s  %s -> %s  %s %s  queued %s", p.Request.ID, p.Request.From, p.Request.To,
			client.FormatAmount(p.Request.Amount, p.Request.Currency), p.Request.Currency, p.Created.Local().Format(time.DateTime))
		if p.Attempts > 0 {
			line += fmt.Sprintf(", %d attempt(s)", p.Attempts)
		}
		if p.LastError != "" {
			line += ", last error: " + p.LastError
		}
		fmt.Fprintln(e.stdout, line)
	}
	fmt.Fprintf(e.stdout, "recent outcomes (%d):\n", len(recent))
	for _, p := range recent {
		fmt.Fprintln(e.stdout, "  "+paymentLine(resultToJSON(p.Result)))
	}
	return nil
}
