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
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/crypto/bcrypt"
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
		// Replicas starting together on one shared store race to import: the first wins, and
		// its users are the same file's.
		if errors.Is(err, ErrUserExists) || errors.Is(err, ErrAccountLinked) {
			if n, cerr := g.store.CountUsers(ctx); cerr == nil && n > 0 {
				g.logger.Info("users imported by another gateway replica meanwhile; not importing again", "users", n, "file", path)
				return nil
			}
		}
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

// loginThrottle is a budget of attempts per key (a username, a client address, an account): burst
// attempts, refilled at one every every. An attempt reserves one from each of its keys before the
// password or code is checked, so that N concurrent attempts spend N and no more than the budget
// is ever checked; an attempt that succeeds gives its reservation back, so that in the end only
// failures count.
type loginThrottle struct {
	mu      sync.Mutex
	buckets map[string]*attemptBucket
	every   time.Duration
	burst   int
}

// attemptBucket is one key's budget: tokens left at time at.
type attemptBucket struct {
	tokens float64
	at     time.Time
}

// maxThrottleKeys bounds the keys a throttle remembers.
const maxThrottleKeys = 100_000

func newLoginThrottle(every time.Duration, burst int) *loginThrottle {
	return &loginThrottle{buckets: make(map[string]*attemptBucket), every: every, burst: burst}
}

// bucket returns key's budget brought up to now; t.mu is held.
func (t *loginThrottle) bucket(key string, now time.Time) *attemptBucket {
	b, ok := t.buckets[key]
	if !ok {
		if len(t.buckets) >= maxThrottleKeys {
			// Forget keys that are back to a full budget; an attacker cycling keys only resets
			// keys it is not using.
			for k, v := range t.buckets {
				if t.refill(v, now); v.tokens >= float64(t.burst) {
					delete(t.buckets, k)
				}
			}
		}
		b = &attemptBucket{tokens: float64(t.burst), at: now}
		t.buckets[key] = b
	}
	t.refill(b, now)
	return b
}

func (t *loginThrottle) refill(b *attemptBucket, now time.Time) {
	if now.After(b.at) {
		b.tokens = min(float64(t.burst), b.tokens+float64(now.Sub(b.at))/float64(t.every))
		b.at = now
	}
}

// attemptReservation is one attempt taken from the budgets of its keys.
type attemptReservation struct {
	t    *loginThrottle
	keys []string
	done bool
}

// reserve takes one attempt from the budget of every key, or, when one of them has none left,
// takes nothing and returns how long until all of them have one.
func (t *loginThrottle) reserve(now time.Time, keys ...string) (*attemptReservation, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var wait time.Duration
	for _, k := range keys {
		if b := t.bucket(k, now); b.tokens < 1 {
			wait = max(wait, time.Duration((1-b.tokens)*float64(t.every)))
		}
	}
	if wait > 0 {
		return nil, max(wait, time.Second)
	}
	for _, k := range keys {
		t.buckets[k].tokens--
	}
	return &attemptReservation{t: t, keys: keys}, 0
}

// refund gives the attempt back to its keys: it did not fail. A second refund does nothing.
func (r *attemptReservation) refund() {
	if r == nil {
		return
	}
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	for _, k := range r.keys {
		if b, ok := r.t.buckets[k]; ok {
			b.tokens = min(float64(r.t.burst), b.tokens+1)
		}
	}
}

// attemptBudget is where a throttle keeps its budgets: in memory (loginThrottle), or in a
// shared store (storeThrottle), so that every replica spends from the same ones.
type attemptBudget interface {
	// take reserves one attempt from each key's budget, as loginThrottle.reserve does: it
	// returns a refund giving it back, or how long to wait (> 0) when it took nothing.
	take(ctx context.Context, now time.Time, keys ...string) (refund func(), wait time.Duration, err error)
}

func (t *loginThrottle) take(_ context.Context, now time.Time, keys ...string) (func(), time.Duration, error) {
	r, wait := t.reserve(now, keys...)
	if r == nil {
		return nil, wait, nil
	}
	return r.refund, 0, nil
}

// storeThrottle is a throttle whose budgets are in a shared store, by the store's clock.
type storeThrottle struct {
	limits sharedLimits
	scope  string
	every  time.Duration
	burst  int
}

func (t *storeThrottle) take(ctx context.Context, _ time.Time, keys ...string) (func(), time.Duration, error) {
	wait, err := t.limits.ReserveAttempt(ctx, t.scope, keys, t.burst, t.every)
	if err != nil || wait > 0 {
		return nil, wait, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			// The attempt is over: give it back even if its call was cancelled.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			t.limits.RefundAttempt(rctx, t.scope, keys, t.burst)
		})
	}, 0, nil
}

// newThrottle returns a throttle of burst attempts refilled at one every every, shared through
// store when it is shared.
func newThrottle(store Store, scope string, every time.Duration, burst int) attemptBudget {
	if l, ok := store.(sharedLimits); ok && store.Shared() {
		return &storeThrottle{limits: l, scope: scope, every: every, burst: burst}
	}
	return newLoginThrottle(every, burst)
}

// throttled is the refusal of an attempt that has no budget left for wait.
func throttled(reason, what string, wait time.Duration) error {
	return rpcerr.New(connect.CodeResourceExhausted, reason,
		fmt.Sprintf("too many %s: try again in %s", what, wait.Round(time.Second)),
		"retry_after_seconds", fmt.Sprint(int(wait.Seconds()+0.999)))
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
	// The attempt is paid for before the password is checked, so that concurrent guesses cannot
	// all be checked before the first failure is counted; a right password gets it back.
	refund, wait, err := g.throttle.take(ctx, now, keys...)
	if err != nil {
		return nil, err
	}
	if wait > 0 {
		return nil, throttled("login_throttled", "failed logins", wait)
	}
	setCallUser(ctx, username)
	u, err := g.store.User(ctx, username)
	if err != nil && !errors.Is(err, ErrNotFound) {
		refund()
		return nil, err
	}
	hash := []byte(u.PasswordHash)
	if errors.Is(err, ErrNotFound) {
		hash = dummyHashFor(g.cfg.BcryptCost)
	}
	if cmpErr := bcrypt.CompareHashAndPassword(hash, []byte(req.Msg.GetPassword())); cmpErr != nil || errors.Is(err, ErrNotFound) {
		return nil, rpcerr.New(connect.CodeUnauthenticated, "invalid_credentials", "invalid username or password")
	}
	refund()
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

// reasonEnrollmentRefused is the reason of every refused account of Register, and of the bank's
// refusal of a code.
const reasonEnrollmentRefused = "enrollment_refused"

// enrollmentRefused is Register's one refusal of accounts[i], whatever the cause: unknown bank or
// account, an account linked already or listed twice, a wrong, used or expired code. Telling
// the causes apart would tell a stranger which accounts exist and which are taken.
func enrollmentRefused(i int) error {
	return rpcerr.New(connect.CodePermissionDenied, reasonEnrollmentRefused,
		fmt.Sprintf("accounts[%d]: enrollment refused: this account cannot be linked with this code; ask the bank for a new code if it has expired or was used", i))
}

func usernameTaken(username string) error {
	return rpcerr.New(connect.CodeAlreadyExists, "username_taken", fmt.Sprintf("username %q is taken", username))
}

// Register implements AuthService.Register. Each account's bank must redeem the account's
// enrollment code for the new username, and no account may be linked already; otherwise nothing
// is created. The bank's holder name is not compared with the username: the code is the proof
// that the person registering holds the account (see docs/architecture.md).
//
// Registrations are throttled per client address and per account: an attempt is paid for before
// anything is checked and given back when it succeeds (or fails for a reason of the gateway's or
// a bank's, such as a bank being down), so that refusals count and N concurrent attempts spend
// N.
func (g *Gateway) Register(ctx context.Context, req *connect.Request[gatewayv1.RegisterRequest]) (*connect.Response[gatewayv1.RegisterResponse], error) {
	// Per account as well as per address: many addresses must not get more guesses at one
	// account. (Its bank also burns a code after a few wrong ones.)
	keys := []string{"register:" + hostOf(req.Peer().Addr)}
	for _, a := range req.Msg.GetAccounts() {
		if k := "register-account:" + a.GetAccountId(); !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	refund, wait, err := g.registerThrottle.take(ctx, g.now(), keys...)
	if err != nil {
		return nil, err
	}
	if wait > 0 {
		return nil, throttled("register_throttled", "refused registrations", wait)
	}
	resp, err := g.register(ctx, req.Msg)
	if code := connect.CodeOf(err); err == nil || (code != connect.CodePermissionDenied && code != connect.CodeAlreadyExists) {
		refund()
	}
	return resp, err
}

func (g *Gateway) register(ctx context.Context, m *gatewayv1.RegisterRequest) (*connect.Response[gatewayv1.RegisterResponse], error) {
	username := m.GetUsername()
	setCallUser(ctx, username)
	// The username first: a taken one must not spend anybody's enrollment code.
	switch _, err := g.store.User(ctx, username); {
	case err == nil:
		return nil, usernameTaken(username)
	case !errors.Is(err, ErrNotFound):
		return nil, err
	}
	enrollments := m.GetAccounts()
	ids := make([]string, len(enrollments))
	// What the gateway knows is checked for every account before any bank redeems a code.
	for i, e := range enrollments {
		id := e.GetAccountId()
		if _, ok := g.banks[account.Bank(id)]; !ok || slices.Contains(ids[:i], id) {
			return nil, enrollmentRefused(i)
		}
		ids[i] = id
		switch owner, err := g.store.AccountOwner(ctx, id); {
		case err == nil && owner != "":
			return nil, enrollmentRefused(i)
		case err != nil && !errors.Is(err, ErrNotFound):
			return nil, err
		}
	}
	// Then each bank redeems its code. A code redeemed here stays bound to this username even
	// if a later account is refused: a retry with the same username and codes succeeds.
	for i, e := range enrollments {
		if err := g.redeemEnrollment(ctx, i, e, username); err != nil {
			return nil, err
		}
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(m.GetPassword()), g.cfg.BcryptCost)
	if err != nil {
		return nil, err
	}
	err = g.store.CreateUsers(ctx, []userRecord{{Username: username, PasswordHash: string(hash), Role: RoleCustomer, Accounts: ids}}, g.now())
	switch {
	case errors.Is(err, ErrUserExists):
		return nil, usernameTaken(username)
	case errors.Is(err, ErrAccountLinked):
		// Linked by a concurrent registration since the check above.
		for i, id := range ids {
			if strings.HasSuffix(err.Error(), ": "+id) {
				return nil, enrollmentRefused(i)
			}
		}
		return nil, enrollmentRefused(0)
	case err != nil:
		return nil, err
	}
	g.logger.InfoContext(ctx, "registered user", "user", username, "accounts", ids)
	return connect.NewResponse(&gatewayv1.RegisterResponse{Username: username, AccountIds: ids}), nil
}

// redeemEnrollment has the bank of accounts[i] redeem its code for username.
func (g *Gateway) redeemEnrollment(ctx context.Context, i int, e *gatewayv1.AccountEnrollment, username string) error {
	id := e.GetAccountId()
	bank := account.Bank(id)
	if err := g.health.check(bank); err != nil {
		return rpcerr.New(connect.CodeUnavailable, "bank_unavailable", err.Error(), "bank", bank)
	}
	cctx, cancel := context.WithTimeout(ctx, g.cfg.BankCallTimeout)
	defer cancel()
	_, err := g.banks[bank].RedeemEnrollmentCode(cctx, connect.NewRequest(&bankv1.RedeemEnrollmentCodeRequest{
		AccountId: id, Code: e.GetEnrollmentCode(), Username: username}))
	g.health.observe(bank, err, false)
	switch {
	case err == nil:
		return nil
	case rpcerr.Reason(err) == reasonEnrollmentRefused, connect.CodeOf(err) == connect.CodeInvalidArgument:
		return enrollmentRefused(i)
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		return rpcerr.New(connect.CodeUnavailable, "bank_unavailable", fmt.Sprintf("bank %s unavailable: %s", bank, connectMessage(err)), "bank", bank)
	}
}

// UserExists reports whether username has a login at the gateway.
func (g *Gateway) UserExists(ctx context.Context, username string) (bool, error) {
	_, err := g.store.User(ctx, username)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// AccountLinked reports whether account id is linked to a user.
func (g *Gateway) AccountLinked(ctx context.Context, id string) (bool, error) {
	owner, err := g.store.AccountOwner(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil && owner != "", err
}
