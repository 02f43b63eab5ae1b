package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/rpcserver"
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

// RequestIDHeader carries a caller's request id; the gateway picks one when it is missing or
// malformed. Admin actions are audited with it.
const RequestIDHeader = "Paygate-Request-Id"

// requestID returns the call's request id: the header's when it is a plain token of at most 64
// characters, a new UUID otherwise.
func requestID(h string) string {
	if n := len(h); n > 0 && n <= 64 && strings.Trim(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:") == "" {
		return h
	}
	return uuid.NewString()
}

// auditCall is what the audit log records of the caller of an admin call.
type auditCall struct {
	actor, cert, peer, requestID string
}

func callerOf(ctx context.Context, peerAddr, reqID string) auditCall {
	c := auditCall{peer: hostOf(peerAddr), requestID: requestID(reqID)}
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
	c := callerOf(ctx, req.Peer().Addr, req.Header().Get(RequestIDHeader))
	rec := auditRecord{Actor: c.actor, ActorCert: c.cert, Peer: c.peer, Action: action, Target: target,
		RequestID: c.requestID, Before: auditJSON(before), After: auditJSON(after), Outcome: "ok"}
	if err != nil {
		rec.Outcome = connect.CodeOf(err).String()
		rec.Reason = rpcerr.Reason(err)
		rec.After = ""
	}
	if _, aerr := a.g.store.AppendAudit(context.WithoutCancel(ctx), rec); aerr != nil {
		a.g.logger.LogAttrs(ctx, slog.LevelError, "audit log append failed", slog.String("action", action), slog.String("error", aerr.Error()))
		return aerr
	}
	return nil
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
// to the audit log.
func (g *Gateway) auditRefusal(ctx context.Context, req rpcserver.Request, user string, err error) {
	c := callerOf(ctx, req.Peer().Addr, req.Header().Get(RequestIDHeader))
	if c.actor == "" {
		c.actor = user
	}
	rec := auditRecord{Actor: c.actor, ActorCert: c.cert, Peer: c.peer, Action: procedureName(req.Spec().Procedure),
		RequestID: c.requestID, Outcome: connect.CodeOf(err).String(), Reason: rpcerr.Reason(err)}
	if _, aerr := g.store.AppendAudit(context.WithoutCancel(ctx), rec); aerr != nil {
		g.logger.LogAttrs(ctx, slog.LevelError, "audit log append failed", slog.String("action", rec.Action), slog.String("error", aerr.Error()))
	}
}

// procedureName returns "CreateUser" for "/paygate.gateway.v1.AdminService/CreateUser".
func procedureName(procedure string) string {
	if i := strings.LastIndexByte(procedure, '/'); i >= 0 {
		return procedure[i+1:]
	}
	return procedure
}
