package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pgdb"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
	"github.com/paygate/paygate/internal/sqlitedb"
)

// AdminService: the operators' interface (proto/paygate/gateway/v1/admin.proto). Its methods
// are spread over admin_*.go by concern; this file holds what they share: who may call them,
// and the audit log every call is appended to.

// adminService implements gatewayv1connect.AdminServiceHandler. Methods not written yet answer
// Unimplemented through the embedded handler.
type adminService struct {
	gatewayv1connect.UnimplementedAdminServiceHandler
	g *Gateway
}

// adminProcedures are every procedure of AdminService, each AccessAdmin in Policy.
var adminProcedures = []string{
	gatewayv1connect.AdminServiceListUsersProcedure,
	gatewayv1connect.AdminServiceGetUserProcedure,
	gatewayv1connect.AdminServiceCreateUserProcedure,
	gatewayv1connect.AdminServiceDisableUserProcedure,
	gatewayv1connect.AdminServiceEnableUserProcedure,
	gatewayv1connect.AdminServiceResetPasswordProcedure,
	gatewayv1connect.AdminServiceSetRoleProcedure,
	gatewayv1connect.AdminServiceLinkAccountProcedure,
	gatewayv1connect.AdminServiceUnlinkAccountProcedure,
	gatewayv1connect.AdminServiceOpenAccountProcedure,
	gatewayv1connect.AdminServiceCloseAccountProcedure,
	gatewayv1connect.AdminServiceListBankAccountsProcedure,
	gatewayv1connect.AdminServiceDepositProcedure,
	gatewayv1connect.AdminServiceWithdrawProcedure,
	gatewayv1connect.AdminServiceListLedgerEntriesProcedure,
	gatewayv1connect.AdminServiceSearchPaymentsProcedure,
	gatewayv1connect.AdminServiceGetPaymentTrailProcedure,
	gatewayv1connect.AdminServiceGetOperationsProcedure,
	gatewayv1connect.AdminServiceRedrivePaymentProcedure,
	gatewayv1connect.AdminServiceListAuditLogProcedure,
	gatewayv1connect.AdminServiceVerifyAuditLogProcedure,
}

func init() {
	for _, p := range adminProcedures {
		Policy[p] = rpcserver.AccessAdmin
	}
}

// Reasons of AdminService's refusals of the caller.
const (
	reasonAdminRequired        = "admin_required"
	reasonSecondFactorRequired = "second_factor_required"
)

// authorizeAdmin is the AdminAuthorizer of both listeners: the caller's token (authenticated
// already) must be an admin's whose login passed the second factor.
func (g *Gateway) authorizeAdmin(ctx context.Context, procedure string) error {
	p, ok := principalFrom(ctx)
	switch {
	case !ok:
		return errNoPrincipal
	case p.Role != RoleAdmin:
		return rpcerr.New(connect.CodePermissionDenied, reasonAdminRequired, "AdminService needs a user with the admin role")
	case !p.SecondFactor:
		return rpcerr.New(connect.CodePermissionDenied, reasonSecondFactorRequired,
			"AdminService needs a session that passed the second factor: log in again with the current TOTP code (totp_code)")
	}
	return nil
}

// RequestIDHeader carries a call's request id (see rpcserver.RequestIDHeader): the gateway
// keeps a well-formed one the caller sends and picks one otherwise, answers with it, and audits
// admin actions with it.
const RequestIDHeader = rpcserver.RequestIDHeader

// requestID returns the request id of the call ctx belongs to, the one its answer carries (set
// by the server, see rpcserver.RequestIDFrom); outside a server, a new one.
func requestID(ctx context.Context) string {
	if id := rpcserver.RequestIDFrom(ctx); id != "" {
		return id
	}
	return rpcserver.NewRequestID()
}

// auditCall is what the audit log records of the caller of an admin call.
type auditCall struct {
	actor, cert, peer, requestID string
}

func callerOf(ctx context.Context, peerAddr string) auditCall {
	c := auditCall{peer: hostOf(peerAddr), requestID: requestID(ctx)}
	if p, ok := principalFrom(ctx); ok {
		c.actor = p.Username
	}
	if peer, ok := identity.PeerFrom(ctx); ok {
		c.cert = peer.Identity.String()
	}
	return c
}

// record appends an admin action to the audit log: action is the procedure's short name
// ("CreateUser"), target what it acted on ("user:alice"), before and after what it changed
// (marshalled to JSON; nil for none) and err its outcome (nil for ok). A failure to append is
// returned: an admin action that cannot be audited is reported as failed to the caller (see
// (*adminService).audited).
func (a *adminService) record(ctx context.Context, req connect.AnyRequest, action, target string, before, after any, err error) error {
	c := callerOf(ctx, req.Peer().Addr)
	rec := auditRecord{Actor: c.actor, ActorCert: c.cert, Peer: c.peer, Action: action, Target: target,
		RequestID: c.requestID, Before: auditJSON(before), After: auditJSON(after), Outcome: "ok"}
	if err != nil {
		rec.Outcome, rec.Reason = auditOutcome(err)
		rec.After = ""
	}
	return a.g.appendAudit(context.WithoutCancel(ctx), rec)
}

// appendAudit appends rec to the audit log, logging a failure at ERROR (the caller decides what
// the failure means for its answer).
func (g *Gateway) appendAudit(ctx context.Context, rec auditRecord) error {
	if _, err := g.store.AppendAudit(ctx, rec); err != nil {
		g.logger.LogAttrs(ctx, slog.LevelError, "audit log append failed", slog.String("action", rec.Action), slog.String("error", err.Error()))
		return err
	}
	return nil
}

// audited records an admin call's outcome with record and returns what the call answers: err,
// or, when err is nil and the entry could not be appended, a failure: an admin action that
// cannot be audited is not reported as done (it may have taken effect: the caller checks and
// retries).
func (a *adminService) audited(ctx context.Context, req connect.AnyRequest, action, target string, before, after any, err error) error {
	if aerr := a.record(ctx, req, action, target, before, after, err); aerr != nil && err == nil {
		return rpcerr.New(connect.CodeUnavailable, "audit_unavailable",
			fmt.Sprintf("%s: the audit log could not be written, so the action is reported as failed; it may have taken effect: check, then retry", action))
	}
	return err
}

// auditOutcome is the outcome and reason the audit log records of err: what the caller is
// answered (see rpcserver's error boundary), as far as it can be told here.
func auditOutcome(err error) (outcome, reason string) {
	err = mapError(context.Background(), err)
	var ce *connect.Error
	isConnect := errors.As(err, &ce)
	switch {
	case isConnect && ce.Code() != connect.CodeUnknown && rpcerr.Reason(err) != "":
		return ce.Code().String(), rpcerr.Reason(err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded.String(), rpcserver.ReasonDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled.String(), rpcserver.ReasonCanceled
	case sqlitedb.Unavailable(err) || pgdb.Unavailable(err):
		return connect.CodeUnavailable.String(), rpcserver.ReasonStorageUnavailable
	case isConnect && ce.Code() != connect.CodeUnknown && ce.Code() != connect.CodeInternal:
		return ce.Code().String(), ce.Code().String()
	}
	return connect.CodeInternal.String(), rpcserver.ReasonInternal
}

// auditJSON marshals v for the audit log; nil is "".
func auditJSON(v any) string {
	if v == nil {
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%q", fmt.Sprint(v))
	}
	return string(b)
}

// auditRefusal is the OnAdminRefused hook of both listeners: a refused admin call is appended
// to the audit log, within a budget per client address (see refusalLimiter), so that a
// stranger cannot flood the log.
func (g *Gateway) auditRefusal(ctx context.Context, req rpcserver.Request, user string, err error) {
	c := callerOf(ctx, req.Peer().Addr)
	if c.actor == "" {
		c.actor = user
	}
	lim := g.refusalBudget()
	if !lim.admit(g, c.peer, g.now()) {
		return
	}
	rec := auditRecord{Actor: c.actor, ActorCert: c.cert, Peer: c.peer, Action: procedureName(req.Spec().Procedure),
		RequestID: c.requestID}
	rec.Outcome, rec.Reason = auditOutcome(err)
	g.appendAudit(context.WithoutCancel(ctx), rec) // logged; the refusal is answered either way
}

// Refused admin calls are audited up to refusalAuditBurst per client address per
// refusalAuditWindow; beyond that they are counted, and one summary entry says how many
// were not appended (action refusalSummaryAction, target "peer:<address>").
const (
	refusalAuditBurst    = 20
	refusalAuditWindow   = time.Minute
	refusalSummaryAction = "refused_calls_suppressed"
	maxRefusalWindows    = 10_000
)

// refusalLimiter is the budget of audit entries of refused admin calls, per client address:
// windows of a fixed length starting at an address's first refusal. It is kept in memory, per
// process.
type refusalLimiter struct {
	burst  int
	window time.Duration

	mu      sync.Mutex
	windows map[string]*refusalWindow
}

// refusalWindow is one address's current window.
type refusalWindow struct {
	addr    string
	start   time.Time
	logged  int
	dropped int
	// timer appends the summary when the window ends, if refusals were dropped.
	timer *time.Timer
}

func newRefusalLimiter(burst int, window time.Duration) *refusalLimiter {
	return &refusalLimiter{burst: burst, window: window, windows: make(map[string]*refusalWindow)}
}

// admit says whether a refusal from addr at now is appended to g's audit log. A refusal that
// starts a new window first appends the summary of the window before, if it has one pending.
func (l *refusalLimiter) admit(g *Gateway, addr string, now time.Time) bool {
	l.mu.Lock()
	w := l.windows[addr]
	var ended *refusalWindow
	if w == nil || !now.Before(w.start.Add(l.window)) {
		if w != nil && w.dropped > 0 {
			ended = w
		}
		if len(l.windows) >= maxRefusalWindows {
			l.prune(now)
		}
		w = &refusalWindow{addr: addr, start: now}
		l.windows[addr] = w
	}
	ok := w.logged < l.burst
	if ok {
		w.logged++
	} else {
		w.dropped++
		if w.timer == nil {
			w.timer = time.AfterFunc(max(w.start.Add(l.window).Sub(now), 0), func() { l.flush(g, w) })
		}
	}
	l.mu.Unlock()
	if ended != nil {
		l.flush(g, ended)
	}
	return ok
}

// flush appends the summary of w's dropped refusals, if any are left to report.
func (l *refusalLimiter) flush(g *Gateway, w *refusalWindow) {
	l.mu.Lock()
	n := w.dropped
	w.dropped = 0
	if w.timer != nil {
		w.timer.Stop()
	}
	l.mu.Unlock()
	if n == 0 {
		return
	}
	summary := struct {
		Count   int    `json:"count"`
		Summary string `json:"summary"`
		From    string `json:"from"`
		Until   string `json:"until"`
	}{n, fmt.Sprintf("%d more refused admin calls from %s", n, w.addr),
		w.start.UTC().Format(time.RFC3339), w.start.Add(l.window).UTC().Format(time.RFC3339)}
	rec := auditRecord{Peer: w.addr, Action: refusalSummaryAction, Target: "peer:" + w.addr,
		RequestID: rpcserver.NewRequestID(), Outcome: connect.CodeResourceExhausted.String(), Reason: "audit_rate_limited",
		After: auditJSON(summary)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g.appendAudit(ctx, rec) // logged
}

// prune forgets windows that have ended with nothing left to report; l.mu is held.
func (l *refusalLimiter) prune(now time.Time) {
	for addr, w := range l.windows {
		if w.dropped == 0 && !now.Before(w.start.Add(l.window)) {
			delete(l.windows, addr)
		}
	}
}

// refusalBudget returns g's budget of audited refusals.
func (g *Gateway) refusalBudget() *refusalLimiter {
	g.refusalsOnce.Do(func() { g.refusals = newRefusalLimiter(refusalAuditBurst, refusalAuditWindow) })
	return g.refusals
}

// procedureName returns "CreateUser" for "/paygate.gateway.v1.AdminService/CreateUser".
func procedureName(procedure string) string {
	if i := strings.LastIndexByte(procedure, '/'); i >= 0 {
		return procedure[i+1:]
	}
	return procedure
}
