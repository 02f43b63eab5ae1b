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

// authenticate checks the bearer token of a user call and returns ctx carrying the principal.
func (g *Gateway) authenticate(ctx context.Context, header string) (context.Context, principal, error) {
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
	// gen counts forgetSession calls: a session read from the store while a logout happened is
	// not cached, since it may predate the revocation.
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
	g.sessions.mu.Lock()
	c, ok := g.sessions.m[key]
	gen := g.sessions.gen
	g.sessions.mu.Unlock()
	if ok && now.Sub(c.at) < sessionCacheTTL {
		return c.sess, c.role, nil
	}
	sess, err := g.store.Session(ctx, tok)
	if err != nil {
		return sess, "", err
	}
	g.sessions.mu.Lock()
	if g.sessions.m == nil || len(g.sessions.m) > 100_000 {
		g.sessions.m = make(map[[32]byte]cachedSession)
	}
	if g.sessions.gen == gen {
		g.sessions.m[key] = cachedSession{sess: sess, role: sess.Role, at: now}
	}
	g.sessions.mu.Unlock()
	return sess, sess.Role, nil
}

// forgetSession drops tok from the cache.
func (g *Gateway) forgetSession(tok string) {
	key := sha256.Sum256([]byte(tok))
	g.sessions.mu.Lock()
	delete(g.sessions.m, key)
	g.sessions.gen++
	g.sessions.mu.Unlock()
}
