package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/rpcerr"
)

// Sessions: tokens, and the authentication of every user call.

// principal is the authenticated user of a call.
type principal struct {
	Username string
	Role     string
	// SecondFactor: the session's login passed the user's TOTP second factor.
	SecondFactor bool
	token        string
}

type principalKey struct{}

func principalFrom(ctx context.Context) (principal, bool) {
	p, ok := ctx.Value(principalKey{}).(principal)
	return p, ok
}

func newToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// bearerToken returns the token of an "Authorization: Bearer <token>" header.
func bearerToken(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// Reasons of refused sessions.
const (
	reasonUserDisabled           = "user_disabled"
	reasonPasswordChangeRequired = "password_change_required"
)

// errUserDisabled refuses a call, or ends a stream, of a user an admin has disabled.
var errUserDisabled = rpcerr.New(connect.CodeUnauthenticated, reasonUserDisabled, "this user is disabled: ask an admin")

// errSessionsRevoked ends a stream whose session was revoked: the user's password or role
// changed, or the user logged out.
var errSessionsRevoked = rpcerr.New(connect.CodeUnauthenticated, "token_revoked", "the session was revoked: log in again")

// passwordChangeExempt are the procedures a user whose password must change may still call.
var passwordChangeExempt = map[string]bool{
	gatewayv1connect.AuthServiceChangePasswordProcedure: true,
	gatewayv1connect.AuthServiceLogoutProcedure:         true,
}

// callProcedure returns the procedure of the call ctx belongs to, "" when it is not known (the
// context of a streaming call, before its handler runs).
func callProcedure(ctx context.Context) string {
	if ci, ok := connect.CallInfoForHandlerContext(ctx); ok {
		return ci.Spec().Procedure
	}
	return ""
}

// authenticate checks the bearer token of a user call and returns ctx carrying the principal.
// The call's procedure is taken from ctx (see authenticateCall).
func (g *Gateway) authenticate(ctx context.Context, header string) (context.Context, principal, error) {
	return g.authenticateCall(ctx, header, callProcedure(ctx))
}

// authenticateCall checks the bearer token of a call of procedure and returns ctx carrying the
// principal. A user who must change its password may call only the procedures in
// passwordChangeExempt (an unknown procedure, "", is not one of them).
func (g *Gateway) authenticateCall(ctx context.Context, header, procedure string) (context.Context, principal, error) {
	tok, ok := bearerToken(header)
	if !ok {
		return ctx, principal{}, rpcerr.New(connect.CodeUnauthenticated, "missing_token",
			"missing bearer token: log in with AuthService/Login and send \"Authorization: Bearer <token>\"")
	}
	sess, role, err := g.session(ctx, tok)
	if errors.Is(err, ErrNotFound) {
		return ctx, principal{}, rpcerr.New(connect.CodeUnauthenticated, "invalid_token", "invalid token: log in again")
	}
	if err != nil {
		return ctx, principal{}, err
	}
	switch {
	case sess.UserDisabled:
		// Before revoked: disabling a user also revokes its sessions, and this is the reason.
		return ctx, principal{}, errUserDisabled
	case sess.Revoked:
		return ctx, principal{}, rpcerr.New(connect.CodeUnauthenticated, "token_revoked", "token was revoked by logout: log in again")
	case !g.now().Before(sess.ExpiresAt):
		return ctx, principal{}, rpcerr.New(connect.CodeUnauthenticated, "token_expired", "token expired: log in again")
	}
	peer, _ := identity.PeerFrom(ctx)
	if sess.CertFingerprint != peer.Fingerprint {
		return ctx, principal{}, rpcerr.New(connect.CodeUnauthenticated, "token_certificate_mismatch",
			"token was issued to a different client certificate: log in with this one")
	}
	if sess.MustChangePassword && !passwordChangeExempt[procedure] {
		return ctx, principal{}, rpcerr.New(connect.CodeFailedPrecondition, reasonPasswordChangeRequired,
			"the password is an initial one: change it with AuthService/ChangePassword, then log in again")
	}
	p := principal{Username: sess.Username, Role: role, SecondFactor: sess.SecondFactor, token: tok}
	return context.WithValue(ctx, principalKey{}, p), p, nil
}

// sessionCacheTTL bounds how long a session read from the store is trusted without reading it
// again. Logout takes effect at once: the cache is only used on a store that is not shared
// (one process, whose logouts drop their sessions from it); on a shared store every call
// reads its session, so that a logout through any replica ends it on all of them.
const sessionCacheTTL = 5 * time.Second

type cachedSession struct {
	sess sessionRecord
	role string
	at   time.Time
}

// sessionCache keeps recently used sessions in memory, keyed by the token's hash, so that an
// authenticated call costs no read of the store.
type sessionCache struct {
	mu sync.Mutex
	m  map[[32]byte]cachedSession
	// byUser indexes m by username, so that every session of a user can be dropped at once
	// (forgetUser) when an admin disables it or changes its password or role.
	byUser map[string]map[[32]byte]struct{}
	// gen counts forgetSession and forgetUser calls: a session read from the store while a
	// logout or a change of its user happened is not cached, since it may predate it.
	gen uint64
}

// session returns the session of tok and its user's role, from the cache when fresh.
func (g *Gateway) session(ctx context.Context, tok string) (sessionRecord, string, error) {
	if g.store.Shared() {
		sess, err := g.store.Session(ctx, tok)
		return sess, sess.Role, err
	}
	key := sha256.Sum256([]byte(tok))
	now := g.now()
	c := &g.sessions
	c.mu.Lock()
	cached, ok := c.m[key]
	gen := c.gen
	c.mu.Unlock()
	if ok && now.Sub(cached.at) < sessionCacheTTL {
		return cached.sess, cached.role, nil
	}
	sess, err := g.store.Session(ctx, tok)
	if err != nil {
		return sess, "", err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) > 100_000 {
		c.m = make(map[[32]byte]cachedSession)
		c.byUser = make(map[string]map[[32]byte]struct{})
	}
	if c.gen == gen {
		c.m[key] = cachedSession{sess: sess, role: sess.Role, at: now}
		if c.byUser[sess.Username] == nil {
			c.byUser[sess.Username] = make(map[[32]byte]struct{})
		}
		c.byUser[sess.Username][key] = struct{}{}
	}
	c.mu.Unlock()
	return sess, sess.Role, nil
}

// forgetSession drops tok from the cache.
func (g *Gateway) forgetSession(tok string) {
	key := sha256.Sum256([]byte(tok))
	c := &g.sessions
	c.mu.Lock()
	if cached, ok := c.m[key]; ok {
		delete(c.m, key)
		if keys := c.byUser[cached.sess.Username]; keys != nil {
			delete(keys, key)
			if len(keys) == 0 {
				delete(c.byUser, cached.sess.Username)
			}
		}
	}
	c.gen++
	c.mu.Unlock()
}

// forgetUser drops every cached session of username, so that the next call of any of them
// reads the store: after the user was disabled, or its password or role changed.
func (g *Gateway) forgetUser(username string) {
	c := &g.sessions
	c.mu.Lock()
	for key := range c.byUser[username] {
		delete(c.m, key)
	}
	delete(c.byUser, username)
	c.gen++
	c.mu.Unlock()
}
