package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/payid"
	"github.com/paygate/paygate/internal/rpcerr"
)

func (p paymentRecord) proto() *gatewayv1.Payment {
	out := &gatewayv1.Payment{
		PaymentId:      p.PaymentID,
		FromAccount:    p.From,
		ToAccount:      p.To,
		Amount:         p.Amount,
		Currency:       p.Currency,
		Description:    p.Description,
		Username:       p.Username,
		CreateTime:     timestamppb.New(p.CreatedAt),
		RefundedAmount: p.Refunded,
		RefundOf:       p.RefundOf,
	}
	switch p.Decision {
	case decisionNone:
		out.Status = gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING
	case decisionCommit:
		out.Status = gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED
	case decisionAbort:
		out.Status = gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED
		out.FailureReason = gatewayv1.FailureReason(p.FailureReason)
		out.FailureMessage = p.FailureMessage
	}
	if !p.DecidedAt.IsZero() {
		out.DecideTime = timestamppb.New(p.DecidedAt)
	}
	return out
}

// protoFor is p as the API shows it to viewer: only its payer (and an admin, who is shown
// p.proto()) sees who paid; its payee sees it with username empty, as events show it.
func (p paymentRecord) protoFor(viewer string) *gatewayv1.Payment {
	out := p.proto()
	if viewer != p.Username {
		out.Username = ""
	}
	return out
}

func mustPrincipal(ctx context.Context) (principal, error) {
	p, ok := principalFrom(ctx)
	if !ok {
		return p, errNoPrincipal
	}
	return p, nil
}

// ExecutePayment implements PaymentService.ExecutePayment.
func (g *Gateway) ExecutePayment(ctx context.Context, req *connect.Request[gatewayv1.ExecutePaymentRequest]) (*connect.Response[gatewayv1.ExecutePaymentResponse], error) {
	user, err := mustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	owner, err := g.accountOwner(ctx, m.GetFromAccount())
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if owner != user.Username {
		return nil, rpcerr.New(connect.CodePermissionDenied, "not_account_owner",
			fmt.Sprintf("from_account: %s is not an account of %s", m.GetFromAccount(), user.Username))
	}
	for _, f := range []struct{ field, account string }{{"from_account", m.GetFromAccount()}, {"to_account", m.GetToAccount()}} {
		if _, ok := g.banks[account.Bank(f.account)]; !ok {
			return nil, rpcerr.New(connect.CodeNotFound, "unknown_bank",
				fmt.Sprintf("%s: %s: no bank named %q (account ids are <bank>-<number>)", f.field, f.account, account.Bank(f.account)))
		}
	}
	if _, ok := payid.Canonical(m.GetPaymentId()); !ok { // the validation interceptor refuses these first
		return nil, rpcerr.New(connect.CodeInvalidArgument, "invalid_argument", "payment_id: want a UUID or a ULID")
	}
	id, err := g.paymentID(ctx, m.GetPaymentId())
	if err != nil {
		return nil, err
	}
	p := paymentRecord{
		PaymentID:   id,
		Username:    user.Username,
		From:        m.GetFromAccount(),
		To:          m.GetToAccount(),
		Amount:      m.GetAmount(),
		Currency:    m.GetCurrency(),
		Description: m.GetDescription(),
		Fingerprint: paymentFingerprint(user.Username, m.GetFromAccount(), m.GetToAccount(), m.GetAmount(), m.GetCurrency()),
	}
	// A new payment that needs a bank known to be down is recorded and fails at once with
	// FAILURE_REASON_BANK_UNAVAILABLE (the coordinator does not prepare it anywhere). It is not
	// refused unrecorded for a retry to succeed later: an earlier attempt with this payment_id
	// whose admission was lost may hold a prepare at that very bank, which would end as a
	// presumed abort once the bank is back, and the promise of a fresh try would not hold.
	out, replayed, err := g.coord.Execute(ctx, p)
	switch {
	case errors.Is(err, ErrPaymentReused):
		return nil, rpcerr.New(connect.CodeAlreadyExists, "payment_id_reused",
			fmt.Sprintf("payment_id: %s was already used for a payment with different parameters; use a new payment_id for a new payment", p.PaymentID))
	case errors.Is(err, ErrPaymentInProgress):
		return nil, rpcerr.New(connect.CodeAborted, "payment_in_progress",
			fmt.Sprintf("payment %s is still in progress; retry with the same payment_id to get its outcome", p.PaymentID))
	case err != nil:
		return nil, err
	}
	if replayed {
		addCallAttrs(ctx, slog.Bool("replayed", true))
	}
	addCallAttrs(ctx, slog.String("status", out.proto().GetStatus().String()))
	return connect.NewResponse(&gatewayv1.ExecutePaymentResponse{Payment: out.proto(), Replayed: replayed}), nil
}

// paymentID is the id under which the store keeps the payment that id names: its canonical
// spelling (package payid), unless the store holds a row spelled exactly as id, written before
// ids were canonical and not rewritten since because its phase two was not done (the banks know
// that spelling). Only a spelling that is not canonical costs the extra lookup.
func (g *Gateway) paymentID(ctx context.Context, id string) (string, error) {
	c := payid.Normalize(id)
	if c == id {
		return c, nil
	}
	_, err := g.store.Payment(ctx, id)
	switch {
	case err == nil:
		return id, nil
	case errors.Is(err, ErrNotFound):
		return c, nil
	}
	return "", err
}

// GetPayment implements PaymentService.GetPayment.
func (g *Gateway) GetPayment(ctx context.Context, req *connect.Request[gatewayv1.GetPaymentRequest]) (*connect.Response[gatewayv1.GetPaymentResponse], error) {
	user, err := mustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	id, err := g.paymentID(ctx, req.Msg.GetPaymentId())
	if err != nil {
		return nil, err
	}
	p, err := g.store.Payment(ctx, id)
	notFound := rpcerr.New(connect.CodeNotFound, "payment_not_found", fmt.Sprintf("payment_id: no payment %s", req.Msg.GetPaymentId()))
	if errors.Is(err, ErrNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if user.Role == RoleAdmin {
		return connect.NewResponse(&gatewayv1.GetPaymentResponse{Payment: p.proto()}), nil
	}
	if p.Username != user.Username {
		// Its payee sees it too (so that a merchant can look up, and refund, what it was
		// paid), without who paid. Anyone else's payment is reported exactly like a missing
		// one.
		payee := ""
		if !isUnadmittedAbort(p) {
			if payee, err = g.accountOwner(ctx, p.To); err != nil && !errors.Is(err, ErrNotFound) {
				return nil, err
			}
		}
		if payee == "" || payee != user.Username {
			return nil, notFound
		}
	}
	return connect.NewResponse(&gatewayv1.GetPaymentResponse{Payment: p.protoFor(user.Username)}), nil
}

// listToken is a ListPayments page token: where the page ended, and which listing it is of
// (the status filter, and whether the payments received), so that a token is refused by
// any other listing.
type listToken struct {
	CreatedAt int64  `json:"t"`
	PaymentID string `json:"id"`
	Status    int32  `json:"s"`
	Received  bool   `json:"r,omitempty"`
}

// ListPayments implements PaymentService.ListPayments.
func (g *Gateway) ListPayments(ctx context.Context, req *connect.Request[gatewayv1.ListPaymentsRequest]) (*connect.Response[gatewayv1.ListPaymentsResponse], error) {
	user, err := mustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	size := int(m.GetPageSize())
	if size == 0 {
		size = 20
	}
	var after *pageCursor
	if m.GetPageToken() != "" {
		raw, err := base64.RawURLEncoding.DecodeString(m.GetPageToken())
		var tok listToken
		if err == nil {
			err = json.Unmarshal(raw, &tok)
		}
		if err != nil || tok.Status != int32(m.GetStatus()) || tok.Received != m.GetReceived() {
			return nil, rpcerr.New(connect.CodeInvalidArgument, "invalid_page_token",
				"page_token: not a token from the previous page of this listing")
		}
		after = &pageCursor{CreatedAt: tok.CreatedAt, PaymentID: tok.PaymentID}
	}
	var filter *decisionFilter
	switch m.GetStatus() {
	case gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING:
		filter = &decisionFilter{decisionNone}
	case gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED:
		filter = &decisionFilter{decisionCommit}
	case gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED:
		filter = &decisionFilter{decisionAbort}
	}
	list := g.store.ListPayments
	if m.GetReceived() {
		list = g.store.ListReceived
	}
	payments, err := list(ctx, user.Username, after, filter, size+1)
	if err != nil {
		return nil, err
	}
	resp := &gatewayv1.ListPaymentsResponse{}
	if len(payments) > size {
		payments = payments[:size]
		last := payments[len(payments)-1]
		raw, _ := json.Marshal(listToken{CreatedAt: last.CreatedAt.UnixNano(), PaymentID: last.PaymentID,
			Status: int32(m.GetStatus()), Received: m.GetReceived()})
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString(raw)
	}
	for _, p := range payments {
		// Received payments are shown as their payee sees them: without who paid.
		resp.Payments = append(resp.Payments, p.protoFor(user.Username))
	}
	return connect.NewResponse(resp), nil
}

// watch takes one of username's payment stream slots, within the user's limit of open streams:
// counted in memory, or across every replica in a shared store. It returns what ends the
// user's streams (endUser) and what releases the slot.
func (g *Gateway) watch(ctx context.Context, username string) (*streamEnd, func(), error) {
	limits, ok := g.store.(sharedLimits)
	if !ok || !g.store.Shared() {
		return g.events.watch(username, g.cfg.MaxWatchersPerUser)
	}
	release, err := limits.OpenStream(ctx, username, g.cfg.MaxWatchersPerUser)
	if errors.Is(err, ErrTooManyStreams) {
		return nil, nil, errTooManyWatchers
	}
	if err != nil {
		return nil, nil, err
	}
	end, cancel, err := g.events.watch(username, 0)
	if err != nil {
		release()
		return nil, nil, err
	}
	var once sync.Once
	return end, func() { once.Do(func() { cancel(); release() }) }, nil
}

// watchSessionCheck is how often a payment stream on a shared store reads its session again,
// so that a user disabled (or a session revoked) through another replica loses its streams
// here too. On a store that is not shared every such change is made by this process, which
// ends the streams at once (userChanged).
const watchSessionCheck = time.Second

// streamSessionEnded reads the session of p again (from the store when it is shared) and
// returns the error its stream ends with, or nil when it is still good. A failure to read it
// keeps the stream: it is retried at the next check.
func (g *Gateway) streamSessionEnded(ctx context.Context, p principal) error {
	sess, _, err := g.session(ctx, p.token)
	switch {
	case errors.Is(err, ErrNotFound):
		return errSessionsRevoked
	case err != nil:
		return nil
	case sess.UserDisabled:
		return errUserDisabled
	case sess.Revoked:
		return errSessionsRevoked
	}
	return nil
}

// WatchPayments implements PaymentService.WatchPayments: the caller's events from the log
// (followEvents), from after when it is set, otherwise from the last event numbered now.
func (g *Gateway) WatchPayments(ctx context.Context, req *connect.Request[gatewayv1.WatchPaymentsRequest], stream *connect.ServerStream[gatewayv1.WatchPaymentsResponse]) error {
	user, err := mustPrincipal(ctx)
	if err != nil {
		return err
	}
	end, cancel, err := g.watch(ctx, user.Username)
	if errors.Is(err, errTooManyWatchers) {
		return rpcerr.New(connect.CodeResourceExhausted, "too_many_watchers",
			fmt.Sprintf("this user has %d payment streams open, the most allowed: close one and watch again", g.cfg.MaxWatchersPerUser),
			"max_watchers", fmt.Sprint(g.cfg.MaxWatchersPerUser))
	}
	if err != nil {
		return err
	}
	defer cancel()
	// A user disabled after this call was authenticated and before its watch was registered
	// (so that endUser could not reach it) is caught here.
	if err := g.streamSessionEnded(ctx, user); err != nil {
		return err
	}
	pos := req.Msg.GetAfter()
	if req.Msg.After == nil {
		if pos, err = g.eventsNow(ctx); err != nil {
			return err
		}
	}
	// Send the headers now, so that the client knows the stream is open before any change,
	// and where in the log it starts: a client that reconnects before any event asks for what
	// came after that.
	stream.ResponseHeader().Set(eventsAfterHeader, strconv.FormatInt(pos, 10))
	if err := stream.Send(nil); err != nil {
		return err
	}
	var check <-chan time.Time
	if g.store.Shared() {
		t := time.NewTicker(watchSessionCheck)
		defer t.Stop()
		check = t.C
	}
	return g.followEvents(ctx, user, pos, end, check, func(ev *gatewayv1.Event) error {
		return stream.Send(&gatewayv1.WatchPaymentsResponse{Payment: ev.GetPayment(), Event: ev})
	})
}

// eventsAfterHeader is WatchPayments' response header saying after which seq the stream
// starts (client.EventsAfterHeader).
const eventsAfterHeader = "Paygate-Events-After"

// FetchBalance implements BalanceService.FetchBalance.
func (g *Gateway) FetchBalance(ctx context.Context, _ *connect.Request[gatewayv1.FetchBalanceRequest]) (*connect.Response[gatewayv1.FetchBalanceResponse], error) {
	user, err := mustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	accounts, err := g.store.Accounts(ctx, user.Username)
	if err != nil {
		return nil, err
	}
	// Payments answered already show applied: wait for their phase twos on these accounts.
	if err := g.coord.waitSettled(ctx, false, accounts...); err != nil {
		return nil, err
	}
	byBank := map[string][]string{}
	var bankNames []string
	for _, a := range accounts {
		b := account.Bank(a)
		if _, ok := byBank[b]; !ok {
			bankNames = append(bankNames, b)
		}
		byBank[b] = append(byBank[b], a)
	}
	sort.Strings(bankNames)
	results := make([]*gatewayv1.BankBalances, len(bankNames))
	each(len(bankNames), func(i int) { results[i] = g.bankBalances(ctx, bankNames[i], byBank[bankNames[i]]) })
	resp := &gatewayv1.FetchBalanceResponse{Banks: results}
	totals := map[string]*gatewayv1.CurrencyTotal{}
	var currencies []string
	for _, b := range results {
		if b.GetStatus() != gatewayv1.BankStatus_BANK_STATUS_AVAILABLE {
			continue // no figures; the totals are marked partial below
		}
		for _, a := range b.GetAccounts() {
			t, ok := totals[a.GetCurrency()]
			if !ok {
				t = &gatewayv1.CurrencyTotal{Currency: a.GetCurrency()}
				totals[a.GetCurrency()] = t
				currencies = append(currencies, a.GetCurrency())
			}
			t.Balance += a.GetBalance()
			t.Available += a.GetAvailable()
		}
	}
	sort.Strings(currencies)
	partial := false
	for _, b := range results {
		partial = partial || b.GetStatus() != gatewayv1.BankStatus_BANK_STATUS_AVAILABLE
	}
	for _, c := range currencies {
		totals[c].Partial = partial
		resp.Totals = append(resp.Totals, totals[c])
	}
	return connect.NewResponse(resp), nil
}

func (g *Gateway) bankBalances(ctx context.Context, bank string, accounts []string) *gatewayv1.BankBalances {
	out := &gatewayv1.BankBalances{Bank: bank}
	unavailable := func(msg string) *gatewayv1.BankBalances {
		out.Status = gatewayv1.BankStatus_BANK_STATUS_UNAVAILABLE
		out.Error = msg
		for _, a := range accounts {
			out.Accounts = append(out.Accounts, &gatewayv1.AccountBalance{AccountId: a})
		}
		return out
	}
	client, ok := g.banks[bank]
	if !ok {
		return unavailable(fmt.Sprintf("no bank named %q is configured", bank))
	}
	if err := g.health.check(bank); err != nil {
		return unavailable(fmt.Sprintf("bank %s is unavailable", bank))
	}
	cctx, cancel := context.WithTimeout(ctx, g.cfg.BankCallTimeout)
	defer cancel()
	resp, err := client.FetchBankBalance(cctx, connect.NewRequest(&bankv1.FetchBankBalanceRequest{AccountIds: accounts}))
	g.health.observe(bank, err, false)
	if err != nil {
		return unavailable(fmt.Sprintf("bank %s unavailable: %s", bank, connectMessage(err)))
	}
	out.Status = gatewayv1.BankStatus_BANK_STATUS_AVAILABLE
	for _, b := range resp.Msg.GetBalances() {
		out.Accounts = append(out.Accounts, &gatewayv1.AccountBalance{
			AccountId:     b.GetAccountId(),
			Currency:      b.GetCurrency(),
			Balance:       b.GetBalance(),
			Held:          b.GetHeld(),
			Available:     b.GetAvailable(),
			PendingCredit: b.GetPendingCredit(),
		})
	}
	return out
}

// GetDecision implements CoordinatorService.GetDecision.
func (g *Gateway) GetDecision(ctx context.Context, req *connect.Request[gatewayv1.GetDecisionRequest]) (*connect.Response[gatewayv1.GetDecisionResponse], error) {
	peer, _ := identity.PeerFrom(ctx)
	id, err := g.paymentID(ctx, req.Msg.GetTransactionId())
	if err != nil {
		return nil, err
	}
	p, err := g.coord.DecisionFor(ctx, id, peer.Identity.Name, req.Msg.GetProof())
	if errors.Is(err, ErrNotParticipant) {
		// The same answer whether the transaction exists or not: the caller learns nothing.
		return nil, rpcerr.New(connect.CodePermissionDenied, "not_a_participant",
			fmt.Sprintf("transaction_id: bank %s cannot show that transaction %s was sent to it (proof missing or invalid)", peer.Identity.Name, id))
	}
	if err != nil {
		return nil, err
	}
	d := gatewayv1.Decision_DECISION_ABORT
	if p.Decision == decisionCommit {
		d = gatewayv1.Decision_DECISION_COMMIT
	}
	addCallAttrs(ctx, slog.String("decision", p.Decision.String()), slog.Bool("presumed", p.Presumed))
	return connect.NewResponse(&gatewayv1.GetDecisionResponse{Decision: d, Presumed: p.Presumed}), nil
}

// ownerCache remembers which user each account is linked to, on a store that is not shared:
// this process makes every change of links, and UnlinkAccount drops its entry (forgetOwner).
// On a shared store another replica may unlink an account at any time, so every payment reads
// the link. Accounts not linked are not cached.
type ownerCache struct {
	mu sync.RWMutex
	m  map[string]string
	// gen counts forgetOwner calls: a link read from the store while one was dropped is not
	// cached, since it may predate the unlink.
	gen uint64
}

// accountOwner returns the user account is linked to, or ErrNotFound.
func (g *Gateway) accountOwner(ctx context.Context, account string) (string, error) {
	if g.store.Shared() {
		return g.store.AccountOwner(ctx, account)
	}
	g.owners.mu.RLock()
	owner, ok := g.owners.m[account]
	gen := g.owners.gen
	g.owners.mu.RUnlock()
	if ok {
		return owner, nil
	}
	owner, err := g.store.AccountOwner(ctx, account)
	if err != nil {
		return owner, err
	}
	g.owners.mu.Lock()
	if g.owners.m == nil {
		g.owners.m = make(map[string]string)
	}
	if g.owners.gen == gen {
		g.owners.m[account] = owner
	}
	g.owners.mu.Unlock()
	return owner, nil
}

// forgetOwner drops account from the cache of links, once it has been unlinked.
func (g *Gateway) forgetOwner(account string) {
	g.owners.mu.Lock()
	delete(g.owners.m, account)
	g.owners.gen++
	g.owners.mu.Unlock()
}
