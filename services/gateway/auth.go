package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/types/known/timestamppb"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/rpcerr"
)

// Roles of users.
const (
	RoleCustomer = "customer"
	RoleAdmin    = "admin"
)

// tokenPrefix starts every token, so a leaked token is easy to recognise in a scanner.
const tokenPrefix = "pgt_"

// UserFixture is one user of the seed format of user_details.json.
type UserFixture struct {
	Password string   `json:"password"`
	Accounts []string `json:"accounts"`
	Role     string   `json:"role,omitempty"`
}

var (
	usernamePattern = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9._-]{0,63}$`)
	accountPattern  = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.]*(-[a-zA-Z0-9_.]+)*-[0-9A-Za-z]+$`)
)

// ParseUsers reads user_details.json in the seed's format:
//
//	{"alice": {"password": "...", "accounts": ["bank1-1001", "bank2-2001"]}, ...}
//
// It refuses empty passwords, malformed usernames or account ids, and an account listed twice.
func ParseUsers(r io.Reader) (map[string]UserFixture, error) {
	dec := json.NewDecoder(r)
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("gateway: users file: want a JSON object of users (%v)", err)
	}
	users := map[string]UserFixture{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("gateway: users file: %w", err)
		}
		name, _ := tok.(string)
		if _, dup := users[name]; dup {
			return nil, fmt.Errorf("gateway: users file: user %s is listed twice", name)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("gateway: users file: user %s: %w", name, err)
		}
		ud := json.NewDecoder(bytes.NewReader(raw))
		ud.DisallowUnknownFields()
		var u UserFixture
		if err := ud.Decode(&u); err != nil {
			return nil, fmt.Errorf("gateway: users file: user %s: %w", name, err)
		}
		users[name] = u
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("gateway: users file: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("gateway: users file: trailing data after the users object")
	}
	seen := map[string]string{}
	for name, u := range users {
		if !usernamePattern.MatchString(name) {
			return nil, fmt.Errorf("gateway: users file: username %q: must start with a letter and use letters, digits, '.', '_' or '-'", name)
		}
		if u.Password == "" {
			return nil, fmt.Errorf("gateway: users file: user %s: empty password", name)
		}
		switch u.Role {
		case "", RoleCustomer, RoleAdmin:
		default:
			return nil, fmt.Errorf("gateway: users file: user %s: unknown role %q", name, u.Role)
		}
		for _, a := range u.Accounts {
			if !accountPattern.MatchString(a) || len(a) > 64 {
				return nil, fmt.Errorf("gateway: users file: user %s: account %q is not of the form <bank>-<number>", name, a)
			}
			if other, ok := seen[a]; ok {
				return nil, fmt.Errorf("gateway: users file: account %s is listed for both %s and %s", a, other, name)
			}
			seen[a] = name
		}
	}
	return users, nil
}

// importUsers loads the users file into an empty store, hashing every password. A store that
// already has users is left alone: after the first start the store is the truth.
func (g *Gateway) importUsers(ctx context.Context, path string) error {
	n, err := g.store.CountUsers(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		g.logger.Info("users already imported; not reading the users file again", "users", n, "file", path)
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	users, err := ParseUsers(bytes.NewReader(data))
	if err != nil {
		return err
	}
	names := make([]string, 0, len(users))
	for name := range users {
		names = append(names, name)
	}
	sort.Strings(names)
	records := make([]userRecord, len(names))
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, name := range names {
		u := users[name]
		role := u.Role
		if role == "" {
			role = RoleCustomer
		}
		records[i] = userRecord{Username: name, Role: role, Accounts: u.Accounts}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := bcrypt.GenerateFromPassword([]byte(u.Password), g.cfg.BcryptCost)
			records[i].PasswordHash, errs[i] = string(h), err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("gateway: hash passwords: %w", err)
	}
	if err := g.store.CreateUsers(ctx, records, g.now()); err != nil {
		return err
	}
	g.logger.Info("imported users", "users", len(records), "file", path)
	return nil
}

// principal is the authenticated user of a call.
type principal struct {
	Username string
	Role     string
	token    string
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
	p := principal{Username: sess.Username, Role: role, token: tok}
	return context.WithValue(ctx, principalKey{}, p), p, nil
}

// sessionCacheTTL bounds how long a session read from the store is trusted without reading it
// again. Logout through this process takes effect at once; through another process sharing the
// store, within this time.
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
	u, err := g.store.User(ctx, sess.Username)
	if err != nil {
		return sess, "", err
	}
	g.sessions.mu.Lock()
	if g.sessions.m == nil || len(g.sessions.m) > 100_000 {
		g.sessions.m = make(map[[32]byte]cachedSession)
	}
	if g.sessions.gen == gen {
		g.sessions.m[key] = cachedSession{sess: sess, role: u.Role, at: now}
	}
	g.sessions.mu.Unlock()
	return sess, u.Role, nil
}

// forgetSession drops tok from the cache.
func (g *Gateway) forgetSession(tok string) {
	key := sha256.Sum256([]byte(tok))
	g.sessions.mu.Lock()
	delete(g.sessions.m, key)
	g.sessions.gen++
	g.sessions.mu.Unlock()
}

// loginThrottle limits failed logins per username and per client address.
type loginThrottle struct {
	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	every    time.Duration
	burst    int
}

func newLoginThrottle(every time.Duration, burst int) *loginThrottle {
	return &loginThrottle{limiters: make(map[string]*rate.Limiter), every: every, burst: burst}
}

func (t *loginThrottle) limiter(key string) *rate.Limiter {
	l, ok := t.limiters[key]
	if !ok {
		if len(t.limiters) > 100_000 {
			// Forget keys that are back to a full budget; an attacker cycling keys only resets
			// keys it is not using.
			for k, v := range t.limiters {
				if v.Tokens() >= float64(t.burst) {
					delete(t.limiters, k)
				}
			}
		}
		l = rate.NewLimiter(rate.Every(t.every), t.burst)
		t.limiters[key] = l
	}
	return l
}

// blocked returns how long keys must wait before another attempt, or 0.
func (t *loginThrottle) blocked(now time.Time, keys ...string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	var wait time.Duration
	for _, k := range keys {
		l := t.limiter(k)
		if l.TokensAt(now) < 1 {
			r := l.ReserveN(now, 1)
			wait = max(wait, r.DelayFrom(now))
			r.CancelAt(now)
		}
	}
	return wait
}

// fail records a failed attempt for keys.
func (t *loginThrottle) fail(now time.Time, keys ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		t.limiter(k).AllowN(now, 1)
	}
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// dummyHashes hold, per bcrypt cost, a hash that a login of an unknown user is checked against,
// so that it costs as much as a wrong password and response times do not tell which usernames
// exist.
var dummyHashes sync.Map // int → []byte

func dummyHashFor(cost int) []byte {
	if h, ok := dummyHashes.Load(cost); ok {
		return h.([]byte)
	}
	h, err := bcrypt.GenerateFromPassword([]byte("paygate-timing-equaliser"), cost)
	if err != nil {
		h, _ = bcrypt.GenerateFromPassword([]byte("paygate-timing-equaliser"), bcrypt.DefaultCost)
	}
	dummyHashes.Store(cost, h)
	return h
}

// Login implements AuthService.Login.
func (g *Gateway) Login(ctx context.Context, req *connect.Request[gatewayv1.LoginRequest]) (*connect.Response[gatewayv1.LoginResponse], error) {
	username := req.Msg.GetUsername()
	keys := []string{"user:" + username, "addr:" + hostOf(req.Peer().Addr)}
	now := g.now()
	if wait := g.throttle.blocked(now, keys...); wait > 0 {
		return nil, rpcerr.New(connect.CodeResourceExhausted, "login_throttled",
			fmt.Sprintf("too many failed logins: try again in %s", wait.Round(time.Second)),
			"retry_after_seconds", fmt.Sprint(int(wait.Seconds()+0.999)))
	}
	setCallUser(ctx, username)
	u, err := g.store.User(ctx, username)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	hash := []byte(u.PasswordHash)
	if errors.Is(err, ErrNotFound) {
		hash = dummyHashFor(g.cfg.BcryptCost)
	}
	if cmpErr := bcrypt.CompareHashAndPassword(hash, []byte(req.Msg.GetPassword())); cmpErr != nil || errors.Is(err, ErrNotFound) {
		g.throttle.fail(now, keys...)
		return nil, rpcerr.New(connect.CodeUnauthenticated, "invalid_credentials", "invalid username or password")
	}
	tok, err := newToken()
	if err != nil {
		return nil, err
	}
	peer, _ := identity.PeerFrom(ctx)
	expires := now.Add(g.cfg.TokenTTL)
	err = g.store.CreateSession(ctx, tok, sessionRecord{Username: username, CertFingerprint: peer.Fingerprint, ExpiresAt: expires}, now, g.cfg.MaxSessionsPerUser)
	if errors.Is(err, ErrTooManySessions) {
		return nil, rpcerr.New(connect.CodeResourceExhausted, "too_many_sessions",
			fmt.Sprintf("this user has %d live sessions, the most allowed: log out of other sessions (or wait for them to expire) and log in again", g.cfg.MaxSessionsPerUser),
			"max_sessions", fmt.Sprint(g.cfg.MaxSessionsPerUser))
	}
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gatewayv1.LoginResponse{Token: tok, ExpireTime: timestamppb.New(expires), Username: username}), nil
}

// Logout implements AuthService.Logout.
func (g *Gateway) Logout(ctx context.Context, _ *connect.Request[gatewayv1.LogoutRequest]) (*connect.Response[gatewayv1.LogoutResponse], error) {
	p, ok := principalFrom(ctx)
	if !ok {
		return nil, errNoPrincipal
	}
	if err := g.store.RevokeSession(ctx, p.token, g.now()); err != nil {
		return nil, err
	}
	g.forgetSession(p.token)
	return connect.NewResponse(&gatewayv1.LogoutResponse{}), nil
}

var errNoPrincipal = rpcerr.New(connect.CodeUnauthenticated, "missing_token", "this call needs a logged-in user")

// Register implements AuthService.Register. Every account must exist at its bank with the new
// username as holder and must not be linked to another user; otherwise nothing is created.
func (g *Gateway) Register(ctx context.Context, req *connect.Request[gatewayv1.RegisterRequest]) (*connect.Response[gatewayv1.RegisterResponse], error) {
	// Refused registrations are throttled per address: their answers say which accounts exist
	// and which are linked, so they must not be a free oracle.
	keys := []string{"register:" + hostOf(req.Peer().Addr)}
	now := g.now()
	if wait := g.registerThrottle.blocked(now, keys...); wait > 0 {
		return nil, rpcerr.New(connect.CodeResourceExhausted, "register_throttled",
			fmt.Sprintf("too many refused registrations: try again in %s", wait.Round(time.Second)),
			"retry_after_seconds", fmt.Sprint(int(wait.Seconds()+0.999)))
	}
	resp, err := g.register(ctx, req.Msg)
	if err != nil && connect.CodeOf(err) != connect.CodeUnavailable && connect.CodeOf(err) != connect.CodeInternal {
		g.registerThrottle.fail(now, keys...)
	}
	return resp, err
}

func (g *Gateway) register(ctx context.Context, m *gatewayv1.RegisterRequest) (*connect.Response[gatewayv1.RegisterResponse], error) {
	setCallUser(ctx, m.GetUsername())
	if _, err := g.store.User(ctx, m.GetUsername()); err == nil {
		return nil, rpcerr.New(connect.CodeAlreadyExists, "username_taken", fmt.Sprintf("username %q is taken", m.GetUsername()))
	}
	for _, a := range registerAccountIDs(m) {
		bank := account.Bank(a)
		client, ok := g.banks[bank]
		if !ok {
			return nil, rpcerr.New(connect.CodeNotFound, "unknown_bank", fmt.Sprintf("account_ids: %s: no bank named %q", a, bank))
		}
		if owner, err := g.store.AccountOwner(ctx, a); err == nil && owner != "" {
			return nil, rpcerr.New(connect.CodeAlreadyExists, "account_already_linked", fmt.Sprintf("account_ids: %s is already linked to a user", a))
		}
		if err := g.health.check(bank); err != nil {
			return nil, rpcerr.New(connect.CodeUnavailable, "bank_unavailable", err.Error(), "bank", bank)
		}
		cctx, cancel := context.WithTimeout(ctx, g.cfg.BankCallTimeout)
		resp, err := client.GetAccount(cctx, connect.NewRequest(&bankv1.GetAccountRequest{AccountId: a}))
		cancel()
		g.health.observe(bank, err, false)
		switch {
		case connect.CodeOf(err) == connect.CodeNotFound:
			return nil, rpcerr.New(connect.CodeNotFound, "unknown_account", fmt.Sprintf("account_ids: %s does not exist at %s", a, bank))
		case err != nil:
			return nil, rpcerr.New(connect.CodeUnavailable, "bank_unavailable", fmt.Sprintf("bank %s unavailable: %s", bank, connectMessage(err)), "bank", bank)
		case resp.Msg.GetAccount().GetHolder() != m.GetUsername():
			return nil, rpcerr.New(connect.CodePermissionDenied, "holder_mismatch",
				fmt.Sprintf("account_ids: %s: the bank's holder of this account is not %q", a, m.GetUsername()))
		}
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(m.GetPassword()), g.cfg.BcryptCost)
	if err != nil {
		return nil, err
	}
	err = g.store.CreateUsers(ctx, []userRecord{{Username: m.GetUsername(), PasswordHash: string(hash), Role: RoleCustomer, Accounts: registerAccountIDs(m)}}, g.now())
	switch {
	case errors.Is(err, ErrUserExists):
		return nil, rpcerr.New(connect.CodeAlreadyExists, "username_taken", fmt.Sprintf("username %q is taken", m.GetUsername()))
	case errors.Is(err, ErrAccountLinked):
		return nil, rpcerr.New(connect.CodeAlreadyExists, "account_already_linked", strings.TrimPrefix(err.Error(), "gateway: "))
	case err != nil:
		return nil, err
	}
	return connect.NewResponse(&gatewayv1.RegisterResponse{Username: m.GetUsername(), AccountIds: registerAccountIDs(m)}), nil
}

// registerAccountIDs is a placeholder until Register checks codes. TODO(enrollment): replace.
func registerAccountIDs(m *gatewayv1.RegisterRequest) []string {
	out := make([]string, len(m.GetAccounts()))
	for i, a := range m.GetAccounts() {
		out[i] = a.GetAccountId()
	}
	return out
}
