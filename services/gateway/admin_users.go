package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/pquerna/otp"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/types/known/timestamppb"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/account"
	"github.com/paygate/paygate/internal/rpcerr"
)

// AdminService: users and the accounts linked to them.

// Reasons of AdminService's refusals about users (with reasonUserNotFound, reasonAccountLinked
// and reasonHolderMismatch, shared with the account procedures).
const (
	reasonAccountNotFound  = "account_not_found"
	reasonAccountNotLinked = "account_not_linked"
	reasonAccountClosed    = "account_closed"
	reasonCannotChangeSelf = "cannot_change_self"
	reasonLastAdmin        = "last_admin"
	reasonInvalidPageToken = "invalid_page_token"
)

// newUsernamePattern is what a new user's name must match (CreateUser, BootstrapAdmin); names
// imported from a users file may be longer (usernamePattern).
var newUsernamePattern = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9._-]{2,31}$`)

// Bounds of an initial password, in characters.
const (
	minPasswordLen = 10
	maxPasswordLen = 256
)

// validateNewUser checks a new user's name and initial password; the error names the field.
func validateNewUser(username, usernameField, password, passwordField string) error {
	if !newUsernamePattern.MatchString(username) {
		return fmt.Errorf("%s: %q: want 3 to 32 letters, digits, '.', '_' or '-', starting with a letter", usernameField, username)
	}
	if n := utf8.RuneCountInString(password); n < minPasswordLen || n > maxPasswordLen {
		return fmt.Errorf("%s: want %d to %d characters, got %d", passwordField, minPasswordLen, maxPasswordLen, n)
	}
	return nil
}

func userTarget(username string) string { return "user:" + username }

// userAudit is what the audit log records of a user: never its password, hash or TOTP secret.
type userAudit struct {
	Role                 string   `json:"role"`
	Disabled             bool     `json:"disabled"`
	MustChangePassword   bool     `json:"must_change_password"`
	SecondFactorEnrolled bool     `json:"second_factor_enrolled"`
	Accounts             []string `json:"accounts"`
	// Set by the action that made the entry.
	PasswordReset   bool   `json:"password_reset,omitempty"`
	NewSecondFactor bool   `json:"new_second_factor,omitempty"`
	Reason          string `json:"reason,omitempty"`
	RevokedSessions int    `json:"revoked_sessions,omitempty"`
	AccountLinked   string `json:"account_linked,omitempty"`
	AccountUnlinked string `json:"account_unlinked,omitempty"`
}

func auditUser(u userRecord) *userAudit {
	accounts := u.Accounts
	if accounts == nil {
		accounts = []string{}
	}
	return &userAudit{Role: u.Role, Disabled: u.Disabled, MustChangePassword: u.MustChangePassword,
		SecondFactorEnrolled: u.TOTPSecret != "", Accounts: accounts}
}

// userProto is u as an admin sees it.
func userProto(u userRecord) *gatewayv1.User {
	out := &gatewayv1.User{
		Username:               u.Username,
		Role:                   u.Role,
		Disabled:               u.Disabled,
		PasswordChangeRequired: u.MustChangePassword,
		SecondFactorEnrolled:   u.TOTPSecret != "",
		AccountIds:             u.Accounts,
	}
	if !u.CreatedAt.IsZero() {
		out.CreateTime = timestamppb.New(u.CreatedAt)
	}
	return out
}

func enrollmentProto(k *otp.Key) *gatewayv1.SecondFactorEnrollment {
	if k == nil {
		return nil
	}
	return &gatewayv1.SecondFactorEnrollment{Secret: k.Secret(), OtpauthUrl: k.URL()}
}

func userNotFound(username string) error {
	return rpcerr.New(connect.CodeNotFound, reasonUserNotFound, fmt.Sprintf("username: no user %q", username))
}

// userErr is the answer for a store error about username.
func userErr(err error, username string) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return userNotFound(username)
	case errors.Is(err, ErrLastAdmin):
		return rpcerr.New(connect.CodeFailedPrecondition, reasonLastAdmin,
			fmt.Sprintf("username: %s is the last enabled admin: make another user an admin first", username))
	}
	return err
}

func cannotChangeSelf(what string) error {
	return rpcerr.New(connect.CodeFailedPrecondition, reasonCannotChangeSelf,
		fmt.Sprintf("username: an admin cannot %s itself: ask another admin", what))
}

// isCaller reports whether username is the caller's.
func isCaller(ctx context.Context, username string) bool {
	p, ok := principalFrom(ctx)
	return ok && p.Username == username
}

// usersPageToken is where a page of ListUsers ends, with the filters it was made for.
type usersPageToken struct {
	After string `json:"a"`
	Query string `json:"q"`
	Role  string `json:"r"`
}

func encodePageToken(v any) string {
	raw, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// decodePageToken reads token into v; it fails for anything that is not a token encodePageToken made.
func decodePageToken(token string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err == nil {
		err = json.Unmarshal(raw, v)
	}
	if err != nil {
		return invalidPageToken()
	}
	return nil
}

func invalidPageToken() error {
	return rpcerr.New(connect.CodeInvalidArgument, reasonInvalidPageToken, "page_token: not a token from the previous page of this listing")
}

// ListUsers implements AdminService.ListUsers.
func (a *adminService) ListUsers(ctx context.Context, req *connect.Request[gatewayv1.ListUsersRequest]) (*connect.Response[gatewayv1.ListUsersResponse], error) {
	resp, err := a.listUsers(ctx, req.Msg)
	if err := a.audited(ctx, req, "ListUsers", "users", nil, nil, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func (a *adminService) listUsers(ctx context.Context, m *gatewayv1.ListUsersRequest) (*gatewayv1.ListUsersResponse, error) {
	size := int(m.GetPageSize())
	if size == 0 {
		size = 50
	}
	var after string
	if t := m.GetPageToken(); t != "" {
		var tok usersPageToken
		if err := decodePageToken(t, &tok); err != nil {
			return nil, err
		}
		if tok.After == "" || tok.Query != m.GetQuery() || tok.Role != m.GetRole() {
			return nil, invalidPageToken()
		}
		after = tok.After
	}
	list, err := a.g.store.ListUsers(ctx, m.GetQuery(), m.GetRole(), after, size+1)
	if err != nil {
		return nil, err
	}
	resp := &gatewayv1.ListUsersResponse{}
	if len(list) > size {
		list = list[:size]
		resp.NextPageToken = encodePageToken(usersPageToken{After: list[len(list)-1].Username, Query: m.GetQuery(), Role: m.GetRole()})
	}
	for _, u := range list {
		resp.Users = append(resp.Users, userProto(u))
	}
	return resp, nil
}

// GetUser implements AdminService.GetUser.
func (a *adminService) GetUser(ctx context.Context, req *connect.Request[gatewayv1.GetUserRequest]) (*connect.Response[gatewayv1.GetUserResponse], error) {
	name := req.Msg.GetUsername()
	u, err := a.g.store.User(ctx, name)
	if err := a.audited(ctx, req, "GetUser", userTarget(name), nil, nil, userErr(err, name)); err != nil {
		return nil, err
	}
	return connect.NewResponse(&gatewayv1.GetUserResponse{User: userProto(u)}), nil
}

// CreateUser implements AdminService.CreateUser.
func (a *adminService) CreateUser(ctx context.Context, req *connect.Request[gatewayv1.CreateUserRequest]) (*connect.Response[gatewayv1.CreateUserResponse], error) {
	name := req.Msg.GetUsername()
	u, key, err := a.createUser(ctx, req.Msg)
	var after *userAudit
	if err == nil {
		after = auditUser(u)
		after.NewSecondFactor = key != nil
	}
	if err := a.audited(ctx, req, "CreateUser", userTarget(name), nil, after, err); err != nil {
		return nil, err
	}
	a.g.logger.InfoContext(ctx, "user created", "user", name, "role", u.Role, "accounts", u.Accounts)
	return connect.NewResponse(&gatewayv1.CreateUserResponse{User: userProto(u), SecondFactor: enrollmentProto(key)}), nil
}

func (a *adminService) createUser(ctx context.Context, m *gatewayv1.CreateUserRequest) (userRecord, *otp.Key, error) {
	g := a.g
	name := m.GetUsername()
	role := m.GetRole()
	if role == "" {
		role = RoleCustomer
	}
	if err := validateNewUser(name, "username", m.GetInitialPassword(), "initial_password"); err != nil {
		return userRecord{}, nil, rpcerr.New(connect.CodeInvalidArgument, "invalid_argument", err.Error())
	}
	switch _, err := g.store.User(ctx, name); {
	case err == nil:
		return userRecord{}, nil, usernameTaken(name)
	case !errors.Is(err, ErrNotFound):
		return userRecord{}, nil, err
	}
	ids := m.GetAccountIds()
	for i, id := range ids {
		if err := g.checkLinkable(ctx, fmt.Sprintf("account_ids[%d]", i), id, name); err != nil {
			return userRecord{}, nil, err
		}
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(m.GetInitialPassword()), g.cfg.BcryptCost)
	if err != nil {
		return userRecord{}, nil, err
	}
	rec := userRecord{Username: name, PasswordHash: string(hash), Role: role, Accounts: ids, MustChangePassword: true}
	var key *otp.Key
	if role == RoleAdmin {
		if key, err = newTOTPKey(name); err != nil {
			return userRecord{}, nil, err
		}
		rec.TOTPSecret = key.Secret()
	}
	err = g.store.CreateUsers(ctx, []userRecord{rec}, g.now())
	switch {
	case errors.Is(err, ErrUserExists):
		return userRecord{}, nil, usernameTaken(name)
	case errors.Is(err, ErrAccountLinked):
		// Linked by a concurrent call since the check above.
		return userRecord{}, nil, rpcerr.New(connect.CodeAlreadyExists, reasonAccountLinked, "account_ids: an account was linked to another user meanwhile")
	case err != nil:
		return userRecord{}, nil, err
	}
	u, err := g.store.User(ctx, name)
	if err != nil {
		return userRecord{}, nil, err
	}
	return u, key, nil
}

// checkLinkable checks that account id may be linked to username: it is linked to nobody, and
// its bank confirms it exists, is open and is held by username. field names the request's
// field in errors.
func (g *Gateway) checkLinkable(ctx context.Context, field, id, username string) error {
	bank := account.Bank(id)
	client, ok := g.banks[bank]
	if !ok {
		return rpcerr.New(connect.CodeNotFound, reasonAccountNotFound,
			fmt.Sprintf("%s: no account %s: no bank named %q (account ids are <bank>-<number>)", field, id, bank))
	}
	switch owner, err := g.store.AccountOwner(ctx, id); {
	case err == nil:
		return rpcerr.New(connect.CodeAlreadyExists, reasonAccountLinked, fmt.Sprintf("%s: %s is linked to %s already", field, id, owner))
	case !errors.Is(err, ErrNotFound):
		return err
	}
	if err := g.health.check(bank); err != nil {
		return rpcerr.New(connect.CodeUnavailable, "bank_unavailable", err.Error(), "bank", bank)
	}
	cctx, cancel := context.WithTimeout(ctx, g.cfg.BankCallTimeout)
	defer cancel()
	resp, err := client.GetAccount(cctx, connect.NewRequest(&bankv1.GetAccountRequest{AccountId: id}))
	g.health.observe(bank, err, false)
	switch code := connect.CodeOf(err); {
	case err == nil:
	case code == connect.CodeNotFound, code == connect.CodeInvalidArgument:
		return rpcerr.New(connect.CodeNotFound, reasonAccountNotFound, fmt.Sprintf("%s: bank %s has no account %s", field, bank, id))
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		return rpcerr.New(connect.CodeUnavailable, "bank_unavailable", fmt.Sprintf("bank %s unavailable: %s", bank, connectMessage(err)), "bank", bank)
	}
	acc := resp.Msg.GetAccount()
	switch {
	case acc.GetHolder() != username:
		return rpcerr.New(connect.CodeFailedPrecondition, reasonHolderMismatch,
			fmt.Sprintf("%s: the holder of %s at bank %s is %q, not %q", field, id, bank, acc.GetHolder(), username))
	case acc.GetClosed():
		return rpcerr.New(connect.CodeFailedPrecondition, reasonAccountClosed, fmt.Sprintf("%s: %s is closed", field, id))
	}
	return nil
}

// updateUser changes username with fn (see adminStore.UpdateUser) and answers the store's
// refusals. The sessions this process has cached are read again (they carry the user's role and
// state); with revoke, the user's sessions end, here at once and on other replicas at their
// next read of them, and so do its payment streams (with endErr).
func (a *adminService) updateUser(ctx context.Context, username string, fn func(u *userRecord) error, revoke bool, endErr error) (before, after userRecord, revoked int, err error) {
	before, after, revoked, err = a.g.store.UpdateUser(ctx, username, fn, revoke, a.g.now())
	if err != nil {
		return before, after, 0, userErr(err, username)
	}
	if revoke {
		a.g.userChanged(username, endErr)
	} else {
		a.g.forgetUser(username)
	}
	return before, after, revoked, nil
}

// DisableUser implements AdminService.DisableUser.
func (a *adminService) DisableUser(ctx context.Context, req *connect.Request[gatewayv1.DisableUserRequest]) (*connect.Response[gatewayv1.DisableUserResponse], error) {
	name := req.Msg.GetUsername()
	var before, after userRecord
	var revoked int
	var err error
	if isCaller(ctx, name) {
		err = cannotChangeSelf("disable")
	} else {
		before, after, revoked, err = a.updateUser(ctx, name, func(u *userRecord) error {
			u.Disabled = true
			return nil
		}, true, errUserDisabled)
	}
	var b, af *userAudit
	if err == nil {
		b, af = auditUser(before), auditUser(after)
		af.Reason, af.RevokedSessions = req.Msg.GetReason(), revoked
	}
	if err := a.audited(ctx, req, "DisableUser", userTarget(name), b, af, err); err != nil {
		return nil, err
	}
	a.g.logger.InfoContext(ctx, "user disabled", "user", name, "revoked_sessions", revoked)
	return connect.NewResponse(&gatewayv1.DisableUserResponse{User: userProto(after), RevokedSessions: int32(revoked)}), nil
}

// EnableUser implements AdminService.EnableUser.
func (a *adminService) EnableUser(ctx context.Context, req *connect.Request[gatewayv1.EnableUserRequest]) (*connect.Response[gatewayv1.EnableUserResponse], error) {
	name := req.Msg.GetUsername()
	before, after, _, err := a.updateUser(ctx, name, func(u *userRecord) error {
		u.Disabled = false
		return nil
	}, false, nil)
	var b, af *userAudit
	if err == nil {
		b, af = auditUser(before), auditUser(after)
	}
	if err := a.audited(ctx, req, "EnableUser", userTarget(name), b, af, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(&gatewayv1.EnableUserResponse{User: userProto(after)}), nil
}

// ResetPassword implements AdminService.ResetPassword.
func (a *adminService) ResetPassword(ctx context.Context, req *connect.Request[gatewayv1.ResetPasswordRequest]) (*connect.Response[gatewayv1.ResetPasswordResponse], error) {
	name := req.Msg.GetUsername()
	var before, after userRecord
	var revoked int
	var err error
	if n := utf8.RuneCountInString(req.Msg.GetInitialPassword()); n < minPasswordLen || n > maxPasswordLen {
		err = rpcerr.New(connect.CodeInvalidArgument, "invalid_argument",
			fmt.Sprintf("initial_password: want %d to %d characters, got %d", minPasswordLen, maxPasswordLen, n))
	}
	var hash []byte
	if err == nil {
		hash, err = bcrypt.GenerateFromPassword([]byte(req.Msg.GetInitialPassword()), a.g.cfg.BcryptCost)
	}
	if err == nil {
		before, after, revoked, err = a.updateUser(ctx, name, func(u *userRecord) error {
			u.PasswordHash = string(hash)
			u.MustChangePassword = true
			return nil
		}, true, errSessionsRevoked)
	}
	var b, af *userAudit
	if err == nil {
		b, af = auditUser(before), auditUser(after)
		af.PasswordReset, af.RevokedSessions = true, revoked
	}
	if err := a.audited(ctx, req, "ResetPassword", userTarget(name), b, af, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(&gatewayv1.ResetPasswordResponse{User: userProto(after), RevokedSessions: int32(revoked)}), nil
}

// errRoleUnchanged is SetRole's update refusing to change a user to the role it has: nothing is
// written and no session ends.
var errRoleUnchanged = errors.New("gateway: the user has that role already")

// SetRole implements AdminService.SetRole.
func (a *adminService) SetRole(ctx context.Context, req *connect.Request[gatewayv1.SetRoleRequest]) (*connect.Response[gatewayv1.SetRoleResponse], error) {
	name, role := req.Msg.GetUsername(), req.Msg.GetRole()
	u, key, b, af, err := a.setRole(ctx, name, role)
	if err := a.audited(ctx, req, "SetRole", userTarget(name), b, af, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(&gatewayv1.SetRoleResponse{User: userProto(u), SecondFactor: enrollmentProto(key)}), nil
}

func (a *adminService) setRole(ctx context.Context, name, role string) (userRecord, *otp.Key, *userAudit, *userAudit, error) {
	if role != RoleAdmin && role != RoleCustomer {
		return userRecord{}, nil, nil, nil, rpcerr.New(connect.CodeInvalidArgument, "invalid_argument", fmt.Sprintf("role: %q: want customer or admin", role))
	}
	if isCaller(ctx, name) && role != RoleAdmin {
		return userRecord{}, nil, nil, nil, cannotChangeSelf("remove the admin role of")
	}
	var key *otp.Key
	if role == RoleAdmin {
		var err error
		if key, err = newTOTPKey(name); err != nil {
			return userRecord{}, nil, nil, nil, err
		}
	}
	before, after, revoked, err := a.updateUser(ctx, name, func(u *userRecord) error {
		// An admin without a second factor (imported from a users file) is enrolled now.
		if u.Role == role && (role != RoleAdmin || u.TOTPSecret != "") {
			return errRoleUnchanged
		}
		u.Role = role
		u.TOTPSecret, u.TOTPLastStep = "", 0
		if key != nil {
			u.TOTPSecret = key.Secret()
		}
		return nil
	}, true, errSessionsRevoked)
	if errors.Is(err, errRoleUnchanged) {
		u, err := a.g.store.User(ctx, name)
		return u, nil, nil, nil, userErr(err, name)
	}
	if err != nil {
		return userRecord{}, nil, nil, nil, err
	}
	b, af := auditUser(before), auditUser(after)
	af.NewSecondFactor, af.RevokedSessions = key != nil, revoked
	return after, key, b, af, nil
}

// LinkAccount implements AdminService.LinkAccount.
func (a *adminService) LinkAccount(ctx context.Context, req *connect.Request[gatewayv1.LinkAccountRequest]) (*connect.Response[gatewayv1.LinkAccountResponse], error) {
	name, id := req.Msg.GetUsername(), req.Msg.GetAccountId()
	before, after, err := a.linkAccount(ctx, name, id)
	var b, af *userAudit
	if err == nil {
		b, af = auditUser(before), auditUser(after)
		af.AccountLinked = id
	}
	if err := a.audited(ctx, req, "LinkAccount", userTarget(name), b, af, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(&gatewayv1.LinkAccountResponse{User: userProto(after)}), nil
}

func (a *adminService) linkAccount(ctx context.Context, name, id string) (before, after userRecord, err error) {
	g := a.g
	before, err = g.store.User(ctx, name)
	if err != nil {
		return before, after, userErr(err, name)
	}
	if err := g.checkLinkable(ctx, "account_id", id, name); err != nil {
		return before, after, err
	}
	switch err := g.store.LinkAccount(ctx, name, id); {
	case errors.Is(err, ErrAccountLinked):
		return before, after, rpcerr.New(connect.CodeAlreadyExists, reasonAccountLinked, fmt.Sprintf("account_id: %s was linked to a user meanwhile", id))
	case err != nil:
		return before, after, userErr(err, name)
	}
	after, err = g.store.User(ctx, name)
	return before, after, userErr(err, name)
}

// UnlinkAccount implements AdminService.UnlinkAccount.
func (a *adminService) UnlinkAccount(ctx context.Context, req *connect.Request[gatewayv1.UnlinkAccountRequest]) (*connect.Response[gatewayv1.UnlinkAccountResponse], error) {
	name, id := req.Msg.GetUsername(), req.Msg.GetAccountId()
	before, after, err := a.unlinkAccount(ctx, name, id)
	var b, af *userAudit
	if err == nil {
		b, af = auditUser(before), auditUser(after)
		af.AccountUnlinked = id
	}
	if err := a.audited(ctx, req, "UnlinkAccount", userTarget(name), b, af, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(&gatewayv1.UnlinkAccountResponse{User: userProto(after)}), nil
}

func (a *adminService) unlinkAccount(ctx context.Context, name, id string) (before, after userRecord, err error) {
	g := a.g
	before, err = g.store.User(ctx, name)
	if err != nil {
		return before, after, userErr(err, name)
	}
	switch err := g.store.UnlinkAccount(ctx, name, id); {
	case errors.Is(err, ErrNotFound):
		return before, after, rpcerr.New(connect.CodeNotFound, reasonAccountNotLinked, fmt.Sprintf("account_id: %s is not linked to %s", id, name))
	case err != nil:
		return before, after, err
	}
	g.forgetOwner(id)
	after, err = g.store.User(ctx, name)
	return before, after, userErr(err, name)
}
