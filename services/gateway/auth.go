package gateway

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"
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

// errInvalidCredentials is the one answer to a failed login, whatever failed: the username, the
// password or the second factor's code.
var errInvalidCredentials = rpcerr.New(connect.CodeUnauthenticated, "invalid_credentials", "invalid username or password")

// Login implements AuthService.Login.
func (g *Gateway) Login(ctx context.Context, req *connect.Request[gatewayv1.LoginRequest]) (_ *connect.Response[gatewayv1.LoginResponse], err error) {
	defer func() { g.paymentMetrics().login(err) }()
	username := req.Msg.GetUsername()
	keys := []string{"user:" + username, "addr:" + hostOf(req.Peer().Addr)}
	now := g.now()
	// The attempt is paid for before the password is checked, so that concurrent guesses cannot
	// all be checked before the first failure is counted; a right password (and code) gets it
	// back.
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
		return nil, errInvalidCredentials
	}
	if u.Disabled {
		// The password was right: this is not a guess to count.
		refund()
		return nil, rpcerr.New(connect.CodePermissionDenied, reasonUserDisabled, "this user is disabled: ask an admin")
	}
	// A code is checked only when sent: without one an admin signs in as a customer would, and
	// AdminService refuses the session. A wrong or replayed code, or one sent for a user with
	// no second factor, fails as a wrong password does, and counts as one.
	secondFactor := false
	if code := req.Msg.GetTotpCode(); code != "" {
		ok, err := g.checkTOTP(ctx, u, code, now)
		if err != nil {
			refund()
			return nil, err
		}
		if !ok {
			return nil, errInvalidCredentials
		}
		secondFactor = true
	}
	refund()
	tok, err := newToken()
	if err != nil {
		return nil, err
	}
	peer, _ := identity.PeerFrom(ctx)
	expires := now.Add(g.cfg.TokenTTL)
	err = g.store.CreateSession(ctx, tok, sessionRecord{Username: username, CertFingerprint: peer.Fingerprint, ExpiresAt: expires, SecondFactor: secondFactor}, now, g.cfg.MaxSessionsPerUser)
	if errors.Is(err, ErrTooManySessions) {
		return nil, rpcerr.New(connect.CodeResourceExhausted, "too_many_sessions",
			fmt.Sprintf("this user has %d live sessions, the most allowed: log out of other sessions (or wait for them to expire) and log in again", g.cfg.MaxSessionsPerUser),
			"max_sessions", fmt.Sprint(g.cfg.MaxSessionsPerUser))
	}
	if err != nil {
		return nil, err
	}
	if secondFactor {
		addCallAttrs(ctx, slog.Bool("second_factor", true))
	}
	return connect.NewResponse(&gatewayv1.LoginResponse{Token: tok, ExpireTime: timestamppb.New(expires), Username: username,
		Role: u.Role, SecondFactor: secondFactor, PasswordChangeRequired: u.MustChangePassword}), nil
}

// checkTOTP reports whether code is u's current TOTP code (one time step either way allowed for
// clock skew) and was not accepted before: a code of the same or an earlier step than the last
// one accepted is a replay. A user with no second factor has no right code.
func (g *Gateway) checkTOTP(ctx context.Context, u userRecord, code string, now time.Time) (bool, error) {
	if u.TOTPSecret == "" {
		return false, nil
	}
	step, ok := totpStep(u.TOTPSecret, code, now)
	if !ok {
		return false, nil
	}
	return g.store.UseTOTPStep(ctx, u.Username, step)
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
func (g *Gateway) Register(ctx context.Context, req *connect.Request[gatewayv1.RegisterRequest]) (_ *connect.Response[gatewayv1.RegisterResponse], err error) {
	defer func() { g.paymentMetrics().registered(err) }()
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

// errPasswordChanged is ChangePassword's refusal to overwrite a password that changed since it
// checked the current one.
var errPasswordChanged = errors.New("gateway: password changed meanwhile")

// ChangePassword implements AuthService.ChangePassword. A wrong current password counts against
// the login throttle (per user and per address), as a failed login does.
func (g *Gateway) ChangePassword(ctx context.Context, req *connect.Request[gatewayv1.ChangePasswordRequest]) (*connect.Response[gatewayv1.ChangePasswordResponse], error) {
	p, err := mustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	current, next := req.Msg.GetCurrentPassword(), req.Msg.GetNewPassword()
	if current == next {
		return nil, rpcerr.New(connect.CodeInvalidArgument, "invalid_argument", "new_password: must differ from current_password")
	}
	now := g.now()
	refund, wait, err := g.throttle.take(ctx, now, "user:"+p.Username, "addr:"+hostOf(req.Peer().Addr))
	if err != nil {
		return nil, err
	}
	if wait > 0 {
		return nil, throttled("login_throttled", "failed password checks", wait)
	}
	u, err := g.store.User(ctx, p.Username)
	if err != nil {
		refund()
		return nil, err
	}
	if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(current)) != nil {
		return nil, rpcerr.New(connect.CodeUnauthenticated, "invalid_credentials", "current_password: wrong password")
	}
	refund()
	hash, err := bcrypt.GenerateFromPassword([]byte(next), g.cfg.BcryptCost)
	if err != nil {
		return nil, err
	}
	_, _, revoked, err := g.store.UpdateUser(ctx, p.Username, func(r *userRecord) error {
		// Compare-and-set: an admin's reset since the check above is not overwritten.
		if r.PasswordHash != u.PasswordHash {
			return errPasswordChanged
		}
		r.PasswordHash = string(hash)
		r.MustChangePassword = false
		return nil
	}, true, now)
	switch {
	case errors.Is(err, errPasswordChanged):
		return nil, rpcerr.New(connect.CodeUnauthenticated, "invalid_credentials", "current_password: the password was changed meanwhile")
	case err != nil:
		return nil, err
	}
	g.userChanged(p.Username, errSessionsRevoked)
	g.logger.InfoContext(ctx, "password changed", "user", p.Username, "revoked_sessions", revoked)
	return connect.NewResponse(&gatewayv1.ChangePasswordResponse{}), nil
}

// userChanged drops what this process remembers of username's sessions after its sessions were
// revoked or it was disabled, and ends its payment streams with err. Other processes sharing
// the store learn it from the store (see watchSessionCheck).
func (g *Gateway) userChanged(username string, err error) {
	g.forgetUser(username)
	g.events.endUser(username, err)
}

// The second factor: TOTP (RFC 6238) with SHA-1, 6 digits and 30 s steps, what authenticator
// apps use by default.
const (
	totpIssuer = "paygate"
	totpPeriod = 30
)

var totpHOTPOpts = hotp.ValidateOpts{Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// newTOTPKey returns a fresh TOTP secret for username.
func newTOTPKey(username string) (*otp.Key, error) {
	k, err := totp.Generate(totp.GenerateOpts{Issuer: totpIssuer, AccountName: username, Period: totpPeriod,
		Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return nil, fmt.Errorf("gateway: new TOTP secret: %w", err)
	}
	return k, nil
}

// totpStep returns the time step whose code code is, among the step of now and the steps
// right before and after it (clock skew), or false when it is none of them or secret is not
// base32.
func totpStep(secret, code string, now time.Time) (int64, bool) {
	step := now.Unix() / totpPeriod
	for _, s := range []int64{step, step - 1, step + 1} {
		if s < 0 {
			continue
		}
		want, err := hotp.GenerateCodeCustom(secret, uint64(s), totpHOTPOpts)
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			return s, true
		}
	}
	return 0, false
}

// totpCode returns secret's code at t.
func totpCode(secret string, t time.Time) (string, error) {
	if t.Unix() < 0 {
		return "", errors.New("gateway: TOTP: time before 1970")
	}
	return hotp.GenerateCodeCustom(secret, uint64(t.Unix()/totpPeriod), totpHOTPOpts)
}
