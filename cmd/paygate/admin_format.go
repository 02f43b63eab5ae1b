package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/paygate/paygate/client"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// What paygate admin prints: the JSON of each kind of record (snake_case, amounts in minor
// units with their decimal beside, enum values in lower case without their prefix, times in
// RFC 3339) and the tables for people.

// paging is the --limit and --page-token flags of a list.
type paging struct {
	limit int
	token string
	max   int
}

func (p *paging) register(fs *flag.FlagSet, def, max int) {
	p.max = max
	fs.IntVar(&p.limit, "limit", def, fmt.Sprintf("at most this many per page, 1 to %d", max))
	fs.StringVar(&p.token, "page-token", "", "the page token printed after the previous page")
}

// check refuses a --limit out of range.
func (p *paging) check() error {
	if p.limit < 1 || p.limit > p.max {
		return usageErrorf("--limit %d: want 1 to %d", p.limit, p.max)
	}
	return nil
}

func (p *paging) size() int32 { return int32(p.limit) }

// next says how to get the next page, if there is one.
func (p *paging) next(w io.Writer, token string) {
	if token != "" {
		fmt.Fprintf(w, "more: run again with --page-token %s\n", token)
	}
}

// enumName is an enum value's name in lower case without its prefix:
// enumName("TRAIL_EVENT_KIND_PREPARE_SENT", "TRAIL_EVENT_KIND_") is "prepare_sent".
func enumName(name, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}

// timeOf returns a timestamp as a time, nil when unset.
func timeOf(ts *timestamppb.Timestamp) *time.Time {
	if ts == nil {
		return nil
	}
	t := ts.AsTime()
	return &t
}

// when is a time as the tables show it: local, to the second; "-" when unset.
func when(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

// orDash is s, or "-" when s is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// userJSON is a user in --json output.
type userJSON struct {
	Username               string     `json:"username"`
	Role                   string     `json:"role"`
	Disabled               bool       `json:"disabled"`
	PasswordChangeRequired bool       `json:"password_change_required"`
	SecondFactorEnrolled   bool       `json:"second_factor_enrolled"`
	Accounts               []string   `json:"accounts"`
	CreateTime             *time.Time `json:"create_time,omitempty"`
}

func userToJSON(u *gatewayv1.User) userJSON {
	out := userJSON{Username: u.GetUsername(), Role: u.GetRole(), Disabled: u.GetDisabled(), PasswordChangeRequired: u.GetPasswordChangeRequired(),
		SecondFactorEnrolled: u.GetSecondFactorEnrolled(), Accounts: u.GetAccountIds(), CreateTime: timeOf(u.GetCreateTime())}
	if out.Accounts == nil {
		out.Accounts = []string{}
	}
	return out
}

// userStatus is a user's state in one word or three.
func userStatus(u userJSON) string {
	switch {
	case u.Disabled:
		return "disabled"
	case u.PasswordChangeRequired:
		return "must change password"
	}
	return "active"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func writeUsersTable(w io.Writer, users []userJSON) {
	fmt.Fprintln(w, "USERNAME\tROLE\tSTATUS\tSECOND FACTOR\tACCOUNTS\tCREATED")
	for _, u := range users {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", u.Username, u.Role, userStatus(u), yesNo(u.SecondFactorEnrolled),
			orDash(strings.Join(u.Accounts, ",")), when(u.CreateTime))
	}
	if len(users) == 0 {
		fmt.Fprintln(w, "no users")
	}
}

// writeUser prints one user as name and value lines.
func writeUser(w io.Writer, u userJSON) {
	fmt.Fprintf(w, "username\t%s\n", u.Username)
	fmt.Fprintf(w, "role\t%s\n", u.Role)
	fmt.Fprintf(w, "status\t%s\n", userStatus(u))
	fmt.Fprintf(w, "second factor\t%s\n", map[bool]string{true: "enrolled", false: "none"}[u.SecondFactorEnrolled])
	fmt.Fprintf(w, "accounts\t%s\n", orDash(strings.Join(u.Accounts, ", ")))
	fmt.Fprintf(w, "created\t%s\n", when(u.CreateTime))
}

// bankAccountJSON is an account at a bank in --json output.
type bankAccountJSON struct {
	AccountID      string `json:"account_id"`
	Bank           string `json:"bank"`
	Holder         string `json:"holder"`
	Currency       string `json:"currency"`
	Closed         bool   `json:"closed"`
	Balance        int64  `json:"balance"`
	Held           int64  `json:"held"`
	Available      int64  `json:"available"`
	PendingCredit  int64  `json:"pending_credit"`
	BalanceDecimal string `json:"balance_decimal"`
	LinkedUsername string `json:"linked_username,omitempty"`
}

func bankAccountToJSON(a *gatewayv1.BankAccount) bankAccountJSON {
	b := a.GetBalance()
	return bankAccountJSON{AccountID: a.GetAccountId(), Bank: a.GetBank(), Holder: a.GetHolder(), Currency: a.GetCurrency(), Closed: a.GetClosed(),
		Balance: b.GetBalance(), Held: b.GetHeld(), Available: b.GetAvailable(), PendingCredit: b.GetPendingCredit(),
		BalanceDecimal: client.FormatAmount(b.GetBalance(), a.GetCurrency()), LinkedUsername: a.GetLinkedUsername()}
}

func writeAccountsTable(w io.Writer, accounts []bankAccountJSON) {
	fmt.Fprintln(w, "ACCOUNT\tHOLDER\tCURRENCY\tBALANCE\tHELD\tAVAILABLE\tPENDING CREDIT\tSTATUS\tUSER")
	for _, a := range accounts {
		status := "open"
		if a.Closed {
			status = "closed"
		}
		c := a.Currency
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.AccountID, a.Holder, c, client.FormatAmount(a.Balance, c), client.FormatAmount(a.Held, c),
			client.FormatAmount(a.Available, c), client.FormatAmount(a.PendingCredit, c), status, orDash(a.LinkedUsername))
	}
	if len(accounts) == 0 {
		fmt.Fprintln(w, "no accounts")
	}
}

// ledgerEntryJSON is a deposit or withdrawal in --json output.
type ledgerEntryJSON struct {
	EntryID       string     `json:"entry_id"`
	Kind          string     `json:"kind"`
	AccountID     string     `json:"account_id"`
	Amount        int64      `json:"amount"`
	AmountDecimal string     `json:"amount_decimal"`
	Currency      string     `json:"currency"`
	Admin         string     `json:"admin"`
	Reason        string     `json:"reason"`
	BalanceAfter  int64      `json:"balance_after"`
	CreateTime    *time.Time `json:"create_time,omitempty"`
}

func ledgerEntryToJSON(e *gatewayv1.LedgerEntry) ledgerEntryJSON {
	return ledgerEntryJSON{EntryID: e.GetEntryId(), Kind: enumName(e.GetKind().String(), "LEDGER_ENTRY_KIND_"), AccountID: e.GetAccountId(),
		Amount: e.GetAmount(), AmountDecimal: client.FormatAmount(e.GetAmount(), e.GetCurrency()), Currency: e.GetCurrency(),
		Admin: e.GetAdmin(), Reason: e.GetReason(), BalanceAfter: e.GetBalanceAfter(), CreateTime: timeOf(e.GetCreateTime())}
}

func writeEntriesTable(w io.Writer, entries []ledgerEntryJSON) {
	fmt.Fprintln(w, "TIME\tKIND\tACCOUNT\tAMOUNT\tBALANCE AFTER\tADMIN\tREASON\tENTRY")
	for _, e := range entries {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s %s\t%s\t%s\t%s\t%s\n", when(e.CreateTime), e.Kind, e.AccountID, e.AmountDecimal, e.Currency,
			client.FormatAmount(e.BalanceAfter, e.Currency), e.Admin, e.Reason, e.EntryID)
	}
	if len(entries) == 0 {
		fmt.Fprintln(w, "no entries")
	}
}

func writePaymentsTable(w io.Writer, payments []paymentJSON) {
	fmt.Fprintln(w, "CREATED\tSTATUS\tPAYMENT\tFROM\tTO\tAMOUNT\tREASON")
	for _, p := range payments {
		reason := p.Reason
		if p.Message != "" {
			reason += ": " + p.Message
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s %s\t%s\n", when(p.CreateTime), p.Status, p.PaymentID, p.From, p.To, p.AmountDecimal, p.Currency, orDash(reason))
	}
	if len(payments) == 0 {
		fmt.Fprintln(w, "no payments")
	}
}

// trailEventJSON is one step of a payment's trail in --json output.
type trailEventJSON struct {
	Time      *time.Time `json:"time,omitempty"`
	Event     string     `json:"event"`
	Bank      string     `json:"bank,omitempty"`
	Vote      string     `json:"vote,omitempty"`
	Decision  string     `json:"decision,omitempty"`
	DecidedBy string     `json:"decided_by,omitempty"`
	Attempt   int32      `json:"attempt,omitempty"`
	Replica   string     `json:"replica,omitempty"`
	Detail    string     `json:"detail,omitempty"`
}

func trailEventToJSON(ev *gatewayv1.TrailEvent) trailEventJSON {
	out := trailEventJSON{Time: timeOf(ev.GetTime()), Event: enumName(ev.GetKind().String(), "TRAIL_EVENT_KIND_"), Bank: ev.GetBank(),
		Vote: ev.GetVote(), Decision: ev.GetDecision(), Attempt: ev.GetAttempt(), Replica: ev.GetReplica(), Detail: ev.GetDetail()}
	if ev.GetDecidedBy() != gatewayv1.DecidedBy_DECIDED_BY_UNSPECIFIED {
		out.DecidedBy = enumName(ev.GetDecidedBy().String(), "DECIDED_BY_")
	}
	return out
}

// trailDetail is the DETAIL column of a trail event: what happened, in words.
func trailDetail(ev trailEventJSON) string {
	var parts []string
	switch ev.Event {
	case "vote":
		if ev.Vote != "" {
			parts = append(parts, ev.Vote)
		}
	case "decided":
		d := ev.Decision
		if ev.DecidedBy != "" {
			d += " by " + strings.ReplaceAll(ev.DecidedBy, "_", " ")
		}
		parts = append(parts, strings.TrimSpace(d))
	case "retry":
		if ev.Attempt > 0 {
			parts = append(parts, "attempt "+strconv.Itoa(int(ev.Attempt)))
		}
	}
	if ev.Detail != "" {
		parts = append(parts, ev.Detail)
	}
	if ev.Replica != "" {
		parts = append(parts, "(replica "+ev.Replica+")")
	}
	return orDash(strings.Join(parts, ": "))
}

// bankTransactionJSON is a bank's own record of a payment in --json output.
type bankTransactionJSON struct {
	Bank   string `json:"bank"`
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"`
}

// trailJSON is a payment's trail in --json output.
type trailJSON struct {
	Payment   paymentJSON           `json:"payment"`
	Completed bool                  `json:"completed"`
	Events    []trailEventJSON      `json:"events"`
	Banks     []bankTransactionJSON `json:"banks"`
}

func trailToJSON(r *gatewayv1.GetPaymentTrailResponse) trailJSON {
	out := trailJSON{Payment: paymentToJSON(r.GetPayment()), Completed: r.GetCompleted(), Events: []trailEventJSON{}, Banks: []bankTransactionJSON{}}
	for _, ev := range r.GetEvents() {
		out.Events = append(out.Events, trailEventToJSON(ev))
	}
	for _, b := range r.GetBanks() {
		out.Banks = append(out.Banks, bankTransactionJSON{Bank: b.GetBank(), State: b.GetState(), Detail: b.GetDetail()})
	}
	return out
}

// writeTrail prints a payment, its timeline and each bank's record.
func writeTrail(w io.Writer, t trailJSON) {
	p := t.Payment
	fmt.Fprintf(w, "payment\t%s\n", p.PaymentID)
	fmt.Fprintf(w, "status\t%s", p.Status)
	if p.Reason != "" {
		fmt.Fprintf(w, " (%s", p.Reason)
		if p.Message != "" {
			fmt.Fprintf(w, ": %s", p.Message)
		}
		fmt.Fprint(w, ")")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "amount\t%s %s\n", p.AmountDecimal, p.Currency)
	fmt.Fprintf(w, "from -> to\t%s -> %s\n", p.From, p.To)
	fmt.Fprintf(w, "completed\t%s\n", yesNo(t.Completed))
	fmt.Fprintln(w)
	fmt.Fprintln(w, "TIME\tEVENT\tBANK\tDETAIL")
	for _, ev := range t.Events {
		ts := "-"
		if ev.Time != nil {
			ts = ev.Time.Local().Format("2006-01-02 15:04:05.000")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", ts, strings.ReplaceAll(ev.Event, "_", " "), orDash(ev.Bank), trailDetail(ev))
	}
	if len(t.Events) == 0 {
		fmt.Fprintln(w, "no events recorded")
	}
	if len(t.Banks) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "BANK\tSTATE NOW\tDETAIL")
		for _, b := range t.Banks {
			fmt.Fprintf(w, "%s\t%s\t%s\n", b.Bank, b.State, orDash(b.Detail))
		}
	}
}

// inDoubtJSON is an unfinished payment in --json output.
type inDoubtJSON struct {
	Payment    paymentJSON `json:"payment"`
	Stage      string      `json:"stage"`
	WaitingFor []string    `json:"waiting_for"`
	Attempts   int32       `json:"attempts"`
}

// bankOperationsJSON is one bank's state in --json output.
type bankOperationsJSON struct {
	Bank                 string `json:"bank"`
	Status               string `json:"status"`
	Error                string `json:"error,omitempty"`
	Accounts             int32  `json:"accounts"`
	Balance              int64  `json:"balance"`
	Held                 int64  `json:"held"`
	PendingCredit        int64  `json:"pending_credit"`
	PreparedTransactions int32  `json:"prepared_transactions"`
	Deposited            int64  `json:"deposited"`
	Withdrawn            int64  `json:"withdrawn"`
}

// operationsJSON is admin ops's --json output.
type operationsJSON struct {
	InDoubt []inDoubtJSON        `json:"in_doubt"`
	More    bool                 `json:"more"`
	Banks   []bankOperationsJSON `json:"banks"`
}

func operationsToJSON(r *gatewayv1.GetOperationsResponse) operationsJSON {
	out := operationsJSON{InDoubt: []inDoubtJSON{}, More: r.GetMore(), Banks: []bankOperationsJSON{}}
	for _, d := range r.GetInDoubt() {
		waiting := d.GetWaitingFor()
		if waiting == nil {
			waiting = []string{}
		}
		out.InDoubt = append(out.InDoubt, inDoubtJSON{Payment: paymentToJSON(d.GetPayment()), Stage: d.GetStage(), WaitingFor: waiting, Attempts: d.GetAttempts()})
	}
	for _, b := range r.GetBanks() {
		out.Banks = append(out.Banks, bankOperationsJSON{Bank: b.GetBank(), Status: enumName(b.GetStatus().String(), "BANK_STATUS_"), Error: b.GetError(),
			Accounts: b.GetAccounts(), Balance: b.GetBalance(), Held: b.GetHeld(), PendingCredit: b.GetPendingCredit(),
			PreparedTransactions: b.GetPreparedTransactions(), Deposited: b.GetDeposited(), Withdrawn: b.GetWithdrawn()})
	}
	return out
}

func writeOperations(w io.Writer, o operationsJSON) {
	fmt.Fprintln(w, "BANK\tSTATUS\tACCOUNTS\tBALANCE\tHELD\tPENDING CREDIT\tPREPARED\tDEPOSITED\tWITHDRAWN")
	for _, b := range o.Banks {
		status := b.Status
		if b.Error != "" {
			status += ": " + b.Error
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", b.Bank, status, b.Accounts, b.Balance, b.Held, b.PendingCredit,
			b.PreparedTransactions, b.Deposited, b.Withdrawn)
	}
	fmt.Fprintln(w, "(amounts in minor units, all currencies together)")
	fmt.Fprintln(w)
	if len(o.InDoubt) == 0 {
		fmt.Fprintln(w, "no payments in doubt")
		return
	}
	fmt.Fprintln(w, "IN DOUBT\tSTAGE\tWAITING FOR\tATTEMPTS\tCREATED\tFROM\tTO\tAMOUNT")
	for _, d := range o.InDoubt {
		p := d.Payment
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s %s\n", p.PaymentID, strings.ReplaceAll(d.Stage, "_", " "), orDash(strings.Join(d.WaitingFor, ",")),
			d.Attempts, when(p.CreateTime), p.From, p.To, p.AmountDecimal, p.Currency)
	}
	if o.More {
		fmt.Fprintln(w, "more in doubt than shown: run again with a larger --limit")
	}
}

// auditEntryJSON is an audit entry in --json output.
type auditEntryJSON struct {
	Seq              int64      `json:"seq"`
	Time             *time.Time `json:"time,omitempty"`
	Actor            string     `json:"actor"`
	ActorCertificate string     `json:"actor_certificate,omitempty"`
	Peer             string     `json:"peer,omitempty"`
	Action           string     `json:"action"`
	Target           string     `json:"target,omitempty"`
	Outcome          string     `json:"outcome"`
	Reason           string     `json:"reason,omitempty"`
	RequestID        string     `json:"request_id,omitempty"`
	Before           string     `json:"before,omitempty"`
	After            string     `json:"after,omitempty"`
	PrevHash         string     `json:"prev_hash"`
	Hash             string     `json:"hash"`
}

func auditEntryToJSON(e *gatewayv1.AuditEntry) auditEntryJSON {
	return auditEntryJSON{Seq: e.GetSeq(), Time: timeOf(e.GetTime()), Actor: e.GetActor(), ActorCertificate: e.GetActorCertificate(), Peer: e.GetPeer(),
		Action: e.GetAction(), Target: e.GetTarget(), Outcome: e.GetOutcome(), Reason: e.GetReason(), RequestID: e.GetRequestId(),
		Before: e.GetBefore(), After: e.GetAfter(), PrevHash: e.GetPrevHash(), Hash: e.GetHash()}
}

func writeAuditTable(w io.Writer, entries []auditEntryJSON) {
	fmt.Fprintln(w, "SEQ\tTIME\tACTOR\tCERTIFICATE\tACTION\tTARGET\tOUTCOME")
	for _, e := range entries {
		outcome := e.Outcome
		if e.Reason != "" {
			outcome += " (" + e.Reason + ")"
		}
		cert := e.ActorCertificate
		if name, ok := strings.CutPrefix(cert, "spiffe://paygate/"); ok {
			cert = name
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, when(e.Time), orDash(e.Actor), orDash(cert), e.Action, orDash(e.Target), outcome)
	}
	if len(entries) == 0 {
		fmt.Fprintln(w, "no entries")
	}
}

// parseWhen reads a --since or --until value: an RFC 3339 time, a local date (2006-01-02) or
// date and time (2006-01-02 15:04), or an age before now ("90m", "36h", "7d").
func parseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{time.DateOnly, "2006-01-02 15:04", time.DateTime} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.AddDate(0, 0, -n), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q: want a time (2026-12-01, \"2026-12-01 15:04\" or RFC 3339) or an age (90m, 36h, 7d)", s)
}
