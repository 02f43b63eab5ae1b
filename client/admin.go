package client

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
)

// Operators: a second factor at login, password changes, and AdminService.

// Roles a Session may have.
const (
	RoleCustomer = "customer"
	RoleAdmin    = "admin"
)

// ReasonPasswordChangeRequired is the reason of the gateway's FailedPrecondition error for a
// user whose password is an initial one (set by an admin): ChangePassword first.
const ReasonPasswordChangeRequired = "password_change_required"

// LoginWithCode is Login for an admin: code is the current 6-digit code of the admin's
// authenticator app (TOTP). A session that passed the second factor (Session.SecondFactor)
// may call AdminService; an admin who logs in with Login, or with an empty code, gets a
// session AdminService refuses. A wrong code fails the login as a wrong password does, and
// the gateway accepts each code once: a second login needs the next code.
func (c *Client) LoginWithCode(ctx context.Context, username, password, code string) (Session, error) {
	return c.login(ctx, &gatewayv1.LoginRequest{Username: username, Password: password, TotpCode: code})
}

// ChangePassword replaces the signed-in user's password. The gateway then ends every session
// of the user, this client's included: the client forgets its token, and the user logs in
// again with the new password. A user whose password was set by an admin must change it
// before any other call is accepted (Session.PasswordChangeRequired, and FailedPrecondition
// with reason ReasonPasswordChangeRequired). A wrong current password is Unauthenticated
// with reason "invalid_credentials"; a new password shorter than 10 characters, or the same
// as the current one, is InvalidArgument.
func (c *Client) ChangePassword(ctx context.Context, current, next string) error {
	if c.Token() == "" {
		return ErrNotLoggedIn
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	err := c.call(ctx, sendOnce, func(ctx context.Context, ep *endpoint) error {
		_, err := ep.auth.ChangePassword(ctx, connect.NewRequest(&gatewayv1.ChangePasswordRequest{CurrentPassword: current, NewPassword: next}))
		return err
	})
	if err != nil {
		return fmt.Errorf("change password: %w", err)
	}
	c.mu.Lock()
	c.token = ""
	c.mu.Unlock()
	c.cfg.logger.Info("password changed; the sessions of the user ended", "user", c.Username())
	return nil
}

// Admin returns a client of the gateway's AdminService that sends this client's token and
// certificate, bounds each call by WithTimeout and moves between the gateway's addresses as
// the other calls do (see "Several gateway replicas" in the package documentation). Reads,
// RedrivePayment and the calls that carry a request_id (OpenAccount, Deposit, Withdraw) may
// be sent to a second address after reaching one that then failed; the other changes are
// sent to a second address only when their request was not sent to the first.
//
// Every AdminService call needs a session that passed the second factor (LoginWithCode) of a
// user with the admin role and, on the mTLS API listener, an admin certificate
// (spiffe://paygate/admin/<name>, made by `paygate certs --admins NAME`, given to
// WithTLSFiles). Errors are the gateway's *connect.Error values, unwrapped: use
// connect.CodeOf and Reason.
func (c *Client) Admin() gatewayv1connect.AdminServiceClient { return adminClient{c} }

// adminClient is Client.Admin's implementation.
type adminClient struct{ c *Client }

var _ gatewayv1connect.AdminServiceClient = adminClient{}

// adminCall makes one AdminService call with failover: f is the method of the generated
// client (a method expression such as gatewayv1connect.AdminServiceClient.ListUsers).
func adminCall[Req, Res any](ctx context.Context, c *Client, kind callKind, req *connect.Request[Req],
	f func(gatewayv1connect.AdminServiceClient, context.Context, *connect.Request[Req]) (*connect.Response[Res], error)) (*connect.Response[Res], error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	var resp *connect.Response[Res]
	err := c.call(ctx, kind, func(ctx context.Context, ep *endpoint) (err error) {
		// A fresh request per address: sending one writes protocol headers into it.
		r := connect.NewRequest(req.Msg)
		maps.Copy(r.Header(), req.Header().Clone())
		resp, err = f(ep.admin, ctx, r)
		return err
	})
	return resp, err
}

// adminIdempotent lists the AdminService procedures that may reach a second address after
// reaching one: they change nothing, or carry the request_id that makes a resend the same
// request, or (RedrivePayment) only hurry what recovery does anyway.
var adminIdempotent = []string{
	gatewayv1connect.AdminServiceListUsersProcedure,
	gatewayv1connect.AdminServiceGetUserProcedure,
	gatewayv1connect.AdminServiceListBankAccountsProcedure,
	gatewayv1connect.AdminServiceListLedgerEntriesProcedure,
	gatewayv1connect.AdminServiceSearchPaymentsProcedure,
	gatewayv1connect.AdminServiceGetPaymentTrailProcedure,
	gatewayv1connect.AdminServiceGetOperationsProcedure,
	gatewayv1connect.AdminServiceListAuditLogProcedure,
	gatewayv1connect.AdminServiceVerifyAuditLogProcedure,
	gatewayv1connect.AdminServiceOpenAccountProcedure,
	gatewayv1connect.AdminServiceDepositProcedure,
	gatewayv1connect.AdminServiceWithdrawProcedure,
	gatewayv1connect.AdminServiceRedrivePaymentProcedure,
}

// adminKind is the callKind of an AdminService procedure.
func adminKind(procedure string) callKind {
	if slices.Contains(adminIdempotent, procedure) {
		return idempotent
	}
	return sendOnce
}

func (a adminClient) ListUsers(ctx context.Context, req *connect.Request[gatewayv1.ListUsersRequest]) (*connect.Response[gatewayv1.ListUsersResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceListUsersProcedure), req, gatewayv1connect.AdminServiceClient.ListUsers)
}

func (a adminClient) GetUser(ctx context.Context, req *connect.Request[gatewayv1.GetUserRequest]) (*connect.Response[gatewayv1.GetUserResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceGetUserProcedure), req, gatewayv1connect.AdminServiceClient.GetUser)
}

func (a adminClient) CreateUser(ctx context.Context, req *connect.Request[gatewayv1.CreateUserRequest]) (*connect.Response[gatewayv1.CreateUserResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceCreateUserProcedure), req, gatewayv1connect.AdminServiceClient.CreateUser)
}

func (a adminClient) DisableUser(ctx context.Context, req *connect.Request[gatewayv1.DisableUserRequest]) (*connect.Response[gatewayv1.DisableUserResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceDisableUserProcedure), req, gatewayv1connect.AdminServiceClient.DisableUser)
}

func (a adminClient) EnableUser(ctx context.Context, req *connect.Request[gatewayv1.EnableUserRequest]) (*connect.Response[gatewayv1.EnableUserResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceEnableUserProcedure), req, gatewayv1connect.AdminServiceClient.EnableUser)
}

func (a adminClient) ResetPassword(ctx context.Context, req *connect.Request[gatewayv1.ResetPasswordRequest]) (*connect.Response[gatewayv1.ResetPasswordResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceResetPasswordProcedure), req, gatewayv1connect.AdminServiceClient.ResetPassword)
}

func (a adminClient) SetRole(ctx context.Context, req *connect.Request[gatewayv1.SetRoleRequest]) (*connect.Response[gatewayv1.SetRoleResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceSetRoleProcedure), req, gatewayv1connect.AdminServiceClient.SetRole)
}

func (a adminClient) LinkAccount(ctx context.Context, req *connect.Request[gatewayv1.LinkAccountRequest]) (*connect.Response[gatewayv1.LinkAccountResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceLinkAccountProcedure), req, gatewayv1connect.AdminServiceClient.LinkAccount)
}

func (a adminClient) UnlinkAccount(ctx context.Context, req *connect.Request[gatewayv1.UnlinkAccountRequest]) (*connect.Response[gatewayv1.UnlinkAccountResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceUnlinkAccountProcedure), req, gatewayv1connect.AdminServiceClient.UnlinkAccount)
}

func (a adminClient) OpenAccount(ctx context.Context, req *connect.Request[gatewayv1.OpenAccountRequest]) (*connect.Response[gatewayv1.OpenAccountResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceOpenAccountProcedure), req, gatewayv1connect.AdminServiceClient.OpenAccount)
}

func (a adminClient) CloseAccount(ctx context.Context, req *connect.Request[gatewayv1.CloseAccountRequest]) (*connect.Response[gatewayv1.CloseAccountResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceCloseAccountProcedure), req, gatewayv1connect.AdminServiceClient.CloseAccount)
}

func (a adminClient) ListBankAccounts(ctx context.Context, req *connect.Request[gatewayv1.ListBankAccountsRequest]) (*connect.Response[gatewayv1.ListBankAccountsResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceListBankAccountsProcedure), req, gatewayv1connect.AdminServiceClient.ListBankAccounts)
}

func (a adminClient) Deposit(ctx context.Context, req *connect.Request[gatewayv1.DepositRequest]) (*connect.Response[gatewayv1.DepositResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceDepositProcedure), req, gatewayv1connect.AdminServiceClient.Deposit)
}

func (a adminClient) Withdraw(ctx context.Context, req *connect.Request[gatewayv1.WithdrawRequest]) (*connect.Response[gatewayv1.WithdrawResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceWithdrawProcedure), req, gatewayv1connect.AdminServiceClient.Withdraw)
}

func (a adminClient) ListLedgerEntries(ctx context.Context, req *connect.Request[gatewayv1.ListLedgerEntriesRequest]) (*connect.Response[gatewayv1.ListLedgerEntriesResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceListLedgerEntriesProcedure), req, gatewayv1connect.AdminServiceClient.ListLedgerEntries)
}

func (a adminClient) SearchPayments(ctx context.Context, req *connect.Request[gatewayv1.SearchPaymentsRequest]) (*connect.Response[gatewayv1.SearchPaymentsResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceSearchPaymentsProcedure), req, gatewayv1connect.AdminServiceClient.SearchPayments)
}

func (a adminClient) GetPaymentTrail(ctx context.Context, req *connect.Request[gatewayv1.GetPaymentTrailRequest]) (*connect.Response[gatewayv1.GetPaymentTrailResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceGetPaymentTrailProcedure), req, gatewayv1connect.AdminServiceClient.GetPaymentTrail)
}

func (a adminClient) GetOperations(ctx context.Context, req *connect.Request[gatewayv1.GetOperationsRequest]) (*connect.Response[gatewayv1.GetOperationsResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceGetOperationsProcedure), req, gatewayv1connect.AdminServiceClient.GetOperations)
}

func (a adminClient) RedrivePayment(ctx context.Context, req *connect.Request[gatewayv1.RedrivePaymentRequest]) (*connect.Response[gatewayv1.RedrivePaymentResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceRedrivePaymentProcedure), req, gatewayv1connect.AdminServiceClient.RedrivePayment)
}

func (a adminClient) ListAuditLog(ctx context.Context, req *connect.Request[gatewayv1.ListAuditLogRequest]) (*connect.Response[gatewayv1.ListAuditLogResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceListAuditLogProcedure), req, gatewayv1connect.AdminServiceClient.ListAuditLog)
}

func (a adminClient) VerifyAuditLog(ctx context.Context, req *connect.Request[gatewayv1.VerifyAuditLogRequest]) (*connect.Response[gatewayv1.VerifyAuditLogResponse], error) {
	return adminCall(ctx, a.c, adminKind(gatewayv1connect.AdminServiceVerifyAuditLogProcedure), req, gatewayv1connect.AdminServiceClient.VerifyAuditLog)
}
