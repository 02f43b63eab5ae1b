package rpcserver

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/rpcerr"
)

// Reasons of the errors the policy interceptor returns (see package rpcerr).
const (
	ReasonPermissionDenied = "permission_denied"
	ReasonUnauthenticated  = "unauthenticated"
)

// Access says who may call a procedure.
type Access int

// The kinds of access. The zero value is not one of them: a Policy entry holding it denies.
const (
	// AccessPublic lets anyone past the TLS handshake call: health, reflection.
	AccessPublic Access = iota + 1
	// AccessUser requires a valid user token, checked by the Config's Authenticator, and, on a
	// listener where the caller presents a certificate, the client role: a bank's or the
	// gateway's certificate cannot act as a user.
	AccessUser
	// AccessGateway requires a client certificate with the gateway role.
	AccessGateway
	// AccessBank requires a client certificate with a bank role.
	AccessBank
	// AccessClient is for calls users make before they have a token (Login, Register): anyone
	// with the client (or admin) role, or with no certificate at all on a listener that asks for
	// none.
	AccessClient
	// AccessAdmin is for operators: a certificate with the admin role where the caller presents
	// one (the API listener; the web listener asks for none), then a user token checked by the
	// Authenticator, then the Config's AuthorizeAdmin (the user's role and second factor).
	// Every refusal is reported to the Config's OnAdminRefused.
	AccessAdmin
)

// String returns the access's name, e.g. "gateway".
func (a Access) String() string {
	switch a {
	case AccessPublic:
		return "public"
	case AccessUser:
		return "user"
	case AccessGateway:
		return "gateway"
	case AccessBank:
		return "bank"
	case AccessClient:
		return "client"
	case AccessAdmin:
		return "admin"
	}
	return fmt.Sprintf("Access(%d)", int(a))
}

// Policy says who may call each procedure, keyed by the generated procedure constants, e.g.
// bankv1connect.BankServicePrepareTransactionProcedure. A procedure that is not in the policy
// is denied with PermissionDenied. The health and reflection procedures are added as
// AccessPublic by New.
type Policy map[string]Access

// Request is what an Authenticator sees of a call: a connect.AnyRequest for unary calls, an
// adapter over the stream for streaming calls. Its message is not decoded yet for streams, so
// authentication must rely on headers and the peer only.
type Request interface {
	Spec() connect.Spec
	Peer() connect.Peer
	Header() http.Header
}

// Authenticator checks the user credentials of an AccessUser call, typically the
// "Authorization: Bearer <token>" header, and may consult identity.PeerFrom(ctx) to bind tokens
// to client certificates. It returns ctx enriched with whatever handlers need to know about the
// user, and the user's name for the call's log line. It returns a Connect error (Unauthenticated,
// usually built with package rpcerr) to refuse the call; other errors are passed to the caller
// as they are.
type Authenticator func(ctx context.Context, req Request) (context.Context, string, error)

// AdminAuthorizer decides an AccessAdmin call once its token is authenticated: ctx is what
// the Authenticator returned. It returns a Connect error to refuse.
type AdminAuthorizer func(ctx context.Context, procedure string) error

// AdminRefusalHook is told of every refused AccessAdmin call, with the context as far as it
// was authenticated (the Authenticator's when it accepted the token), the user's name if known
// and the error answered. It runs before the refusal is sent and must not block for long.
type AdminRefusalHook func(ctx context.Context, req Request, user string, err error)

// ReasonAdminCertificateRequired is the reason of an AccessAdmin call refused for its
// certificate.
const ReasonAdminCertificateRequired = "admin_certificate_required"

// policyInterceptor enforces a Policy. It implements connect.Interceptor.
type policyInterceptor struct {
	policy         Policy
	authenticate   Authenticator
	authorizeAdmin AdminAuthorizer
	onAdminRefused AdminRefusalHook
}

func (p *policyInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		ctx, err := p.check(ctx, req)
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (p *policyInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (p *policyInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := p.check(ctx, streamRequest{conn})
		if err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

// check decides a call, returning the context to continue with or the error to answer.
func (p *policyInterceptor) check(ctx context.Context, req Request) (context.Context, error) {
	procedure := req.Spec().Procedure
	access, ok := p.policy[procedure]
	if !ok {
		return ctx, rpcerr.New(connect.CodePermissionDenied, ReasonPermissionDenied,
			fmt.Sprintf("%s is not allowed on this listener", procedure),
			"procedure", procedure)
	}
	switch access {
	case AccessPublic:
		return ctx, nil
	case AccessClient:
		return ctx, requireClientRole(ctx, procedure)
	case AccessUser:
		if err := requireClientRole(ctx, procedure); err != nil {
			return ctx, err
		}
		if p.authenticate == nil {
			return ctx, rpcerr.New(connect.CodeUnauthenticated, ReasonUnauthenticated,
				fmt.Sprintf("%s needs a user token, and this listener authenticates no users", procedure))
		}
		authed, user, err := p.authenticate(ctx, req)
		if err != nil {
			return ctx, err
		}
		if authed == nil {
			authed = ctx
		}
		CallInfoFrom(ctx).SetUser(user)
		return authed, nil
	case AccessAdmin:
		return p.checkAdmin(ctx, req, procedure)
	case AccessGateway:
		return ctx, requireRole(ctx, procedure, identity.RoleGateway)
	case AccessBank:
		return ctx, requireRole(ctx, procedure, identity.RoleBank)
	}
	return ctx, rpcerr.New(connect.CodePermissionDenied, ReasonPermissionDenied,
		fmt.Sprintf("%s is not allowed on this listener", procedure),
		"procedure", procedure)
}

// checkAdmin decides an AccessAdmin call: certificate, token, then the user.
func (p *policyInterceptor) checkAdmin(ctx context.Context, req Request, procedure string) (context.Context, error) {
	refuse := func(ctx context.Context, user string, err error) (context.Context, error) {
		if p.onAdminRefused != nil {
			p.onAdminRefused(ctx, req, user, err)
		}
		return ctx, err
	}
	if peer, ok := identity.PeerFrom(ctx); ok && peer.Identity.Role != identity.RoleAdmin {
		caller := peer.Identity.String()
		if caller == "" {
			caller = "a certificate without a paygate identity"
		}
		return refuse(ctx, "", rpcerr.New(connect.CodePermissionDenied, ReasonAdminCertificateRequired,
			fmt.Sprintf("%s needs a certificate of the admin role (spiffe://paygate/admin/<name>); caller is %s", serviceShortName(procedure), caller),
			"required_role", string(identity.RoleAdmin)))
	}
	if p.authenticate == nil || p.authorizeAdmin == nil {
		return refuse(ctx, "", rpcerr.New(connect.CodePermissionDenied, ReasonPermissionDenied,
			fmt.Sprintf("%s is not allowed on this listener", procedure), "procedure", procedure))
	}
	authed, user, err := p.authenticate(ctx, req)
	if err != nil {
		return refuse(ctx, "", err)
	}
	if authed == nil {
		authed = ctx
	}
	CallInfoFrom(ctx).SetUser(user)
	if err := p.authorizeAdmin(authed, procedure); err != nil {
		return refuse(authed, user, err)
	}
	return authed, nil
}

// requireClientRole refuses a call whose certificate has a role other than client or admin. A
// call with no certificate (the web listener) passes: the token is then what identifies the
// user.
func requireClientRole(ctx context.Context, procedure string) error {
	peer, ok := identity.PeerFrom(ctx)
	if !ok || peer.Identity.Role == identity.RoleClient || peer.Identity.Role == identity.RoleAdmin {
		return nil
	}
	return requireRole(ctx, procedure, identity.RoleClient)
}

// requireRole checks that the verified client certificate of the call has role.
func requireRole(ctx context.Context, procedure string, role identity.Role) error {
	service := serviceShortName(procedure)
	peer, ok := identity.PeerFrom(ctx)
	if !ok {
		return rpcerr.New(connect.CodeUnauthenticated, ReasonUnauthenticated,
			fmt.Sprintf("%s accepts only the %s role; the caller presented no client certificate", service, role),
			"required_role", string(role))
	}
	if peer.Identity.Role == role {
		return nil
	}
	caller := peer.Identity.String()
	if caller == "" {
		caller = "a certificate without a paygate identity (sha256 " + peer.Fingerprint + ")"
	}
	return rpcerr.New(connect.CodePermissionDenied, ReasonPermissionDenied,
		fmt.Sprintf("%s accepts only the %s role; caller is %s", service, role, caller),
		"required_role", string(role), "caller", peer.Identity.String())
}

// serviceShortName returns "BankService" for "/paygate.bank.v1.BankService/PrepareTransaction".
func serviceShortName(procedure string) string {
	s := strings.TrimPrefix(procedure, "/")
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	if i := strings.LastIndexByte(s, '.'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// streamRequest adapts a streaming handler connection to Request.
type streamRequest struct {
	conn connect.StreamingHandlerConn
}

func (r streamRequest) Spec() connect.Spec  { return r.conn.Spec() }
func (r streamRequest) Peer() connect.Peer  { return r.conn.Peer() }
func (r streamRequest) Header() http.Header { return r.conn.RequestHeader() }
