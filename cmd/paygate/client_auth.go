package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/paygate/paygate/client"
	"github.com/paygate/paygate/services/gateway"
)

func init() {
	register(newLoginCommand)
	register(newLogoutCommand)
	register(newRegisterCommand)
	register(newChangePasswordCommand)
}

func newLoginCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "login")
	cf := clientFlags{e: e}
	cf.register(fs)
	password := fs.String("password", "", "password (default: read from stdin, without echo at a terminal; for a demo user of a running 'paygate dev', from dev.json)")
	totp := fs.String("totp", "", "an admin's second factor: the current 6-digit `CODE` of its authenticator app (default: none; for the admin of a running 'paygate dev', computed from dev.json)")
	return &ffcli.Command{
		Name:       "login",
		ShortUsage: "paygate login [flags] USERNAME",
		ShortHelp:  "sign in and keep the token in the config directory",
		LongHelp: "Signs in at the gateway and keeps the token, the gateway address and the\n" +
			"certificate paths in CONFIG/session.json (mode 0600), for the other commands.\n" +
			"After 'paygate dev' in this directory, 'paygate login alice' needs nothing else.\n" +
			"Queued payments that waited for a new login are sent by 'paygate queue'.\n\n" +
			"With several gateway replicas, give them all, in order of preference:\n" +
			"  paygate login --gateway 10.0.0.1:8443,10.0.0.2:8443 alice\n" +
			"The list is kept, and every command tries the addresses in turn; the token\n" +
			"works at every replica.\n\n" +
			"An admin who means to run 'paygate admin' signs in with the second factor and\n" +
			"its admin certificate (made by 'paygate certs --admins NAME'):\n" +
			"  paygate login --certs certs --cert certs/admin-ops.pem --key certs/admin-ops-key.pem --totp 123456 ops\n" +
			"The code may also come from PAYGATE_TOTP. Each code is accepted once.\n" +
			"A user whose password an admin set must run 'paygate change-password' first.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usageErrorf("want exactly one USERNAME")
			}
			user := args[0]
			old, err := cf.loadSession()
			if err != nil {
				return err
			}
			pw := *password
			code := strings.TrimSpace(*totp)
			if code != "" && !validTOTPCode(code) {
				return usageErrorf("--totp %q: want the 6 digits the authenticator app shows", code)
			}
			// The demo users and admin of a running `paygate dev`: what dev.json says.
			var devSecret string
			if dev, ok := cf.readDevInfo(); ok {
				for _, u := range dev.Users {
					if u.Username == user && pw == "" {
						pw = u.Password
					}
				}
				if a := dev.Admin; a != nil {
					noCertFlags := cf.cert == "" && cf.key == "" && cf.certs == ""
					switch {
					case a.Username == user:
						if pw == "" {
							pw = a.Password
						}
						if code == "" {
							devSecret = a.TOTPSecret
						}
						if noCertFlags {
							cf.cert, cf.key = a.Cert, a.Key
						}
					case noCertFlags && old.Cert == a.Cert:
						// A customer after the admin: dev.json's client certificate again.
						old.Cert, old.Key = "", ""
					}
				}
			}
			if pw == "" {
				if pw, err = newSecretReader(e, false).read(ctx, "Password", "give --password (or PAYGATE_PASSWORD), or type it on stdin"); err != nil {
					return err
				}
			}
			// The old token is not sent with Login; the new one replaces it.
			old.Token, old.Username = "", ""
			c, t, err := cf.connect(old, false, false)
			if err != nil {
				return err
			}
			defer c.Close()
			var s client.Session
			switch {
			case devSecret != "":
				s, err = devAdminLogin(ctx, c, user, pw, devSecret)
			case code != "":
				s, err = c.LoginWithCode(ctx, user, pw, code)
			default:
				s, err = c.Login(ctx, user, pw)
			}
			if err != nil {
				return withReason(err)
			}
			if err := cf.saveSession(session{Gateway: t.gateway, CA: t.ca, Cert: t.cert, Key: t.key,
				Username: s.Username, Token: s.Token, ExpireTime: s.ExpireTime}); err != nil {
				return fmt.Errorf("keep the token: %w", err)
			}
			pending := 0
			if dir, err := cf.statePath(); err == nil {
				if q, err := client.OpenQueue(dir); err == nil {
					if list, err := q.Pending(ctx); err == nil {
						pending = len(list)
					}
					q.Close()
				}
			}
			// With several addresses: the one that answered.
			at := displayAddr(c.ActiveAddress())
			if cf.json {
				return printJSON(e.stdout, map[string]any{"username": s.Username, "gateway": t.gateway, "answered_by": at, "expire_time": s.ExpireTime, "queued": pending,
					"role": s.Role, "second_factor": s.SecondFactor, "password_change_required": s.PasswordChangeRequired})
			}
			fmt.Fprintf(e.stdout, "logged in as %s at %s (token expires %s)\n", s.Username, at, s.ExpireTime.Local().Format(time.DateTime))
			if note := roleNote(s); note != "" {
				fmt.Fprintln(e.stdout, note)
			}
			switch {
			case s.PasswordChangeRequired:
				fmt.Fprintln(e.stdout, "your password is an initial one: run 'paygate change-password' before anything else")
			case s.Role == client.RoleAdmin && !s.SecondFactor:
				fmt.Fprintln(e.stdout, "no second factor: 'paygate admin' commands are refused; log in again with --totp CODE")
			}
			if pending > 0 {
				fmt.Fprintf(e.stdout, "%d queued payment(s) waiting: run 'paygate queue' to send them\n", pending)
			}
			return nil
		},
	}
}

func newLogoutCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "logout")
	cf := clientFlags{e: e}
	cf.register(fs)
	return &ffcli.Command{
		Name:       "logout",
		ShortUsage: "paygate logout [flags]",
		ShortHelp:  "revoke the token and forget it",
		LongHelp: "Revokes the token at the gateway and removes it from CONFIG/session.json.\n" +
			"Queued payments stay queued until the next login.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			s, c, err := cf.connectLoggedIn()
			if err != nil {
				return err
			}
			defer c.Close()
			revokeErr := c.Logout(ctx)
			user := s.Username
			s.Token, s.Username, s.ExpireTime = "", "", time.Time{}
			if err := cf.saveSession(s); err != nil {
				return err
			}
			if revokeErr != nil {
				return fmt.Errorf("forgot the token, but could not revoke it at the gateway: %w", revokeErr)
			}
			if cf.json {
				return printJSON(e.stdout, map[string]any{"logged_out": user})
			}
			fmt.Fprintf(e.stdout, "logged out %s\n", user)
			return nil
		},
	}
}

// enrollmentList is the repeatable --account ACCOUNT=CODE flag of register; a value may also
// hold several, separated by commas.
type enrollmentList []client.Enrollment

func (a *enrollmentList) String() string {
	parts := make([]string, len(*a))
	for i, e := range *a {
		parts[i] = e.Account + "=…"
	}
	return strings.Join(parts, ",")
}

func (a *enrollmentList) Set(v string) error {
	for _, part := range splitList(v) {
		account, code, ok := strings.Cut(part, "=")
		account, code = strings.TrimSpace(account), strings.TrimSpace(code)
		if !ok || account == "" || code == "" {
			return fmt.Errorf("%q: want ACCOUNT=CODE, the account and the enrollment code its bank sent, e.g. bank1-1004=K7QX-3MZD-9TRA-WP4C", part)
		}
		*a = append(*a, client.Enrollment{Account: account, Code: code})
	}
	return nil
}

func newRegisterCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "register")
	cf := clientFlags{e: e}
	cf.register(fs)
	password := fs.String("password", "", "password, at least 10 characters (default: read from stdin)")
	var accounts enrollmentList
	fs.Var(&accounts, "account", "an account to link and its enrollment code, ACCOUNT=CODE (e.g. bank1-1004=K7QX-3MZD-9TRA-WP4C); repeat for more accounts")
	return &ffcli.Command{
		Name:       "register",
		ShortUsage: "paygate register [flags] --account ACCOUNT=CODE [--account ...] USERNAME",
		ShortHelp:  "create a user and link bank accounts with the enrollment codes their banks sent",
		LongHelp: "Creates USERNAME with a password and links the accounts. Each account needs the\n" +
			"one-time enrollment code that its bank issued for it and sent to the holder (a bank\n" +
			"operator makes one with 'paygate bank enroll'; 'paygate dev' prints codes for its demo\n" +
			"holders). Case, spaces and hyphens in a code do not matter. The bank binds a code to\n" +
			"the first username that uses it: the same command may be run again, another username\n" +
			"is refused. If any account is refused (enrollment_refused: unknown, linked already,\n" +
			"or a wrong, used or expired code), nothing is created. Then run\n" +
			"'paygate login USERNAME'.\n\n" +
			"Example:\n" +
			"  paygate register --account bank1-1004=K7QX-3MZD-9TRA-WP4C erin",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usageErrorf("want exactly one USERNAME")
			}
			if len(accounts) == 0 {
				return usageErrorf("--account: at least one ACCOUNT=CODE to link")
			}
			pw, err := readPassword(e, *password)
			if err != nil {
				return err
			}
			s, err := cf.loadSession()
			if err != nil {
				return err
			}
			s.Token, s.Username = "", ""
			c, _, err := cf.connect(s, false, false)
			if err != nil {
				return err
			}
			defer c.Close()
			linked, err := c.Register(ctx, args[0], pw, accounts...)
			if err != nil {
				if r := client.Reason(err); r != "" {
					return fmt.Errorf("%w (%s)", err, r)
				}
				return err
			}
			if cf.json {
				return printJSON(e.stdout, map[string]any{"username": args[0], "accounts": linked})
			}
			fmt.Fprintf(e.stdout, "registered %s with account(s) %s; now run 'paygate login %s'\n", args[0], strings.Join(linked, ", "), args[0])
			return nil
		},
	}
}

// devAdminLogin logs the admin of a running `paygate dev` in with the code of the TOTP secret
// in dev.json. The gateway accepts each code once and the next one early (clock skew): when
// the current code was used already, by a login less than 30 s ago, the next one is tried.
func devAdminLogin(ctx context.Context, c *client.Client, user, pw, secret string) (client.Session, error) {
	now := time.Now()
	var s client.Session
	var err error
	for _, at := range []time.Time{now, now.Add(30 * time.Second)} {
		code, cerr := gateway.CurrentTOTP(secret, at)
		if cerr != nil {
			return s, fmt.Errorf("the TOTP secret of dev.json: %w", cerr)
		}
		if s, err = c.LoginWithCode(ctx, user, pw, code); connect.CodeOf(err) != connect.CodeUnauthenticated {
			break
		}
	}
	return s, err
}

// validTOTPCode reports whether code looks like an authenticator app's code: 6 digits.
func validTOTPCode(code string) bool {
	if len(code) != 6 {
		return false
	}
	for _, c := range code {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// roleNote is login's line on the session's role: "role: admin, second factor passed".
func roleNote(s client.Session) string {
	switch {
	case s.Role == client.RoleAdmin && s.SecondFactor:
		return "role: admin, second factor passed"
	case s.Role == client.RoleAdmin:
		return "role: admin, without second factor"
	case s.Role != "":
		return "role: " + s.Role
	}
	return ""
}

func newChangePasswordCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "change-password")
	cf := clientFlags{e: e}
	cf.register(fs)
	current := fs.String("password", "", "the current password (default: read from stdin, without echo at a terminal)")
	next := fs.String("new-password", "", "the new password, at least 10 characters (default: read from stdin, without echo at a terminal and typed twice)")
	fromStdin := fs.Bool("password-stdin", false, "read the passwords not given otherwise from stdin, one a line (the current one first), also at a terminal")
	return &ffcli.Command{
		Name:       "change-password",
		ShortUsage: "paygate change-password [flags]",
		ShortHelp:  "replace your password; every session of yours ends",
		LongHelp: "Replaces the password of the logged-in user. The gateway then ends every\n" +
			"session of the user, this one included: log in again with the new password.\n" +
			"A user whose password an admin set (an initial password) must run it before any\n" +
			"other command is accepted. The passwords are never arguments of their own: they\n" +
			"come from PAYGATE_PASSWORD and PAYGATE_NEW_PASSWORD (or the flags), else from stdin\n" +
			"one a line, the current one first, or from prompts that do not echo.\n\n" +
			"Example:\n" +
			"  paygate login erin          # with the initial password\n" +
			"  paygate change-password     # prompts: current, new, new again\n" +
			"  paygate login erin          # with the new one",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			s, c, err := connectAsLogin(&cf)
			if err != nil {
				return err
			}
			defer c.Close()
			in := newSecretReader(e, *fromStdin)
			cur, nw := *current, *next
			if cur == "" {
				if cur, err = in.read(ctx, "Current password", "give PAYGATE_PASSWORD, or type it on stdin"); err != nil {
					return err
				}
			}
			if nw == "" {
				if nw, err = in.newPassword(ctx, "New password", "give PAYGATE_NEW_PASSWORD, or type it on stdin after the current one"); err != nil {
					return err
				}
			} else if err := checkNewPassword(nw); err != nil {
				return err
			}
			if nw == cur {
				return usageErrorf("the new password is the current one")
			}
			if err := c.ChangePassword(ctx, cur, nw); err != nil {
				return withReason(err)
			}
			user := s.Username
			s.Token, s.Username, s.ExpireTime = "", "", time.Time{}
			if err := cf.saveSession(s); err != nil {
				return fmt.Errorf("password changed, but could not forget the old token: %w", err)
			}
			if cf.json {
				return printJSON(e.stdout, map[string]any{"username": user, "password_changed": true})
			}
			fmt.Fprintf(e.stdout, "password of %s changed; every session of %s ended: run 'paygate login %s' with the new password\n", user, user, user)
			return nil
		},
	}
}

// withReason adds the gateway's reason to err's text: "... wrong password (invalid_credentials)".
func withReason(err error) error {
	if r := client.Reason(err); r != "" && !strings.Contains(err.Error(), "("+r+")") {
		return fmt.Errorf("%w (%s)", err, r)
	}
	return err
}
