package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"connectrpc.com/connect"
	"github.com/peterbourgon/ff/v3/ffcli"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// paygate admin users: the gateway's users.

func newAdminUsersCommand(e *env) *ffcli.Command {
	return adminGroup(e, "admin users", "list, create, disable and change users and their accounts",
		"Users of the gateway: customers, who pay from their linked accounts, and admins.\n"+
			"A user an admin creates (or whose password an admin resets) signs in with that\n"+
			"initial password and must change it before anything else.",
		newAdminUsersListCommand(e),
		newAdminUsersGetCommand(e),
		newAdminUsersCreateCommand(e),
		newAdminUsersDisableCommand(e),
		newAdminUsersEnableCommand(e),
		newAdminUsersResetPasswordCommand(e),
		newAdminUsersSetRoleCommand(e),
		newAdminUsersLinkCommand(e, true),
		newAdminUsersLinkCommand(e, false),
	)
}

// listFlag is a repeatable flag of comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, splitList(v)...)
	return nil
}

// initialPassword is how a command that sets an initial password gets it: PAYGATE_INITIAL_PASSWORD,
// stdin (--password-stdin), a prompt without echo, or --generate-password.
type initialPassword struct{ fromStdin, generate bool }

func (ip *initialPassword) register(fs *flag.FlagSet) {
	fs.BoolVar(&ip.fromStdin, "password-stdin", false, "read the initial password from stdin (one line), also at a terminal")
	fs.BoolVar(&ip.generate, "generate-password", false, "make a random initial password and print it")
}

const initialPasswordHelp = "The initial password, at least 10 characters, comes from\n" +
	"PAYGATE_INITIAL_PASSWORD, from stdin (--password-stdin), from a prompt that does not\n" +
	"echo it, or is made up and printed (--generate-password); it is never an argument.\n" +
	"The user must change it at the first login ('paygate change-password')."

// get returns the initial password, and whether it was generated (and must be printed).
func (ip *initialPassword) get(ctx context.Context, e *env) (string, bool, error) {
	env := os.Getenv("PAYGATE_INITIAL_PASSWORD")
	switch {
	case ip.generate && (ip.fromStdin || env != ""):
		return "", false, usageErrorf("--generate-password makes the password: give no other (--password-stdin, PAYGATE_INITIAL_PASSWORD)")
	case ip.generate:
		return generatePassword(), true, nil
	case env != "":
		return env, false, checkNewPassword(env)
	}
	pw, err := newSecretReader(e, ip.fromStdin).newPassword(ctx, "Initial password",
		"set PAYGATE_INITIAL_PASSWORD, pipe it to --password-stdin, or use --generate-password")
	return pw, false, err
}

// printInitialPassword prints a generated initial password.
func printInitialPassword(w io.Writer, username, pw string, generated bool) {
	if generated {
		fmt.Fprintf(w, "initial password of %s: %s\n  give it to %s privately; it must be changed at the first login\n", username, pw, username)
	}
}

func newAdminUsersListCommand(e *env) *ffcli.Command {
	var pg paging
	var query, role string
	return adminSpec{
		path:    "admin users list",
		args:    "[flags]",
		short:   "list users in username order",
		long:    "Lists users with their role, state, second factor and linked accounts.",
		example: "  paygate admin users list --query al --role customer",
		flags: func(fs *flag.FlagSet) {
			pg.register(fs, 50, 500)
			fs.StringVar(&query, "query", "", "only usernames containing this (case-insensitive)")
			fs.StringVar(&role, "role", "", "only this role: customer or admin")
		},
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if err := pg.check(); err != nil {
				return err
			}
			if role != "" && role != "customer" && role != "admin" {
				return usageErrorf("--role %q: want customer or admin", role)
			}
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.ListUsers(ctx, connect.NewRequest(&gatewayv1.ListUsersRequest{Query: query, Role: role, PageSize: pg.size(), PageToken: pg.token}))
			if err != nil {
				return adminFailure("users list", err)
			}
			out := struct {
				Users         []userJSON `json:"users"`
				NextPageToken string     `json:"next_page_token"`
			}{Users: []userJSON{}, NextPageToken: resp.Msg.GetNextPageToken()}
			for _, u := range resp.Msg.GetUsers() {
				out.Users = append(out.Users, userToJSON(u))
			}
			return a.output(out, func(w io.Writer) {
				writeUsersTable(w, out.Users)
				pg.next(w, out.NextPageToken)
			})
		},
	}.command(e)
}

func newAdminUsersGetCommand(e *env) *ffcli.Command {
	return adminSpec{
		path:    "admin users get",
		args:    "[flags] USERNAME",
		short:   "show one user and its linked accounts",
		long:    "Shows a user: role, state, second factor, linked accounts, creation time.",
		example: "  paygate admin users get alice",
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args, "USERNAME"); err != nil {
				return err
			}
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.GetUser(ctx, connect.NewRequest(&gatewayv1.GetUserRequest{Username: args[0]}))
			if err != nil {
				return adminFailure("users get "+args[0], err)
			}
			u := userToJSON(resp.Msg.GetUser())
			return a.output(u, func(w io.Writer) { writeUser(w, u) })
		},
	}.command(e)
}

func newAdminUsersCreateCommand(e *env) *ffcli.Command {
	var role string
	var accounts listFlag
	var ip initialPassword
	return adminSpec{
		path:  "admin users create",
		args:  "[flags] USERNAME",
		short: "create a user with an initial password and linked accounts",
		long: "Creates USERNAME (3 to 32 letters, digits, '.', '_' or '-', starting with a\n" +
			"letter) and links the accounts given with --account: each bank must confirm that\n" +
			"the account's holder is the username. An admin's second factor is enrolled at\n" +
			"once: its TOTP secret is printed this once.\n" + initialPasswordHelp,
		example: "  paygate admin users create --account bank1-1004 --generate-password erin\n" +
			"  paygate admin users create --role admin --password-stdin ops2 < initial-password",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&role, "role", "customer", "customer or admin")
			fs.Var(&accounts, "account", "an account to link, <bank>-<number>; repeat (or separate with commas) for more")
			ip.register(fs)
		},
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args, "USERNAME"); err != nil {
				return err
			}
			if role != "customer" && role != "admin" {
				return usageErrorf("--role %q: want customer or admin", role)
			}
			pw, generated, err := ip.get(ctx, a.e)
			if err != nil {
				return err
			}
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.CreateUser(ctx, connect.NewRequest(&gatewayv1.CreateUserRequest{Username: args[0], InitialPassword: pw, Role: role, AccountIds: accounts}))
			if err != nil {
				return adminFailure("users create "+args[0], err)
			}
			u := userToJSON(resp.Msg.GetUser())
			sf := resp.Msg.GetSecondFactor()
			if a.cf.json {
				out := map[string]any{"user": u}
				if generated {
					out["initial_password"] = pw
				}
				if sf != nil {
					out["totp_secret"], out["otpauth_url"] = sf.GetSecret(), sf.GetOtpauthUrl()
				}
				return printJSON(a.e.stdout, out)
			}
			fmt.Fprintf(a.e.stdout, "created %s %s with account(s) %s\n", u.Role, u.Username, orDash(strings.Join(u.Accounts, ", ")))
			printInitialPassword(a.e.stdout, u.Username, pw, generated)
			if sf != nil {
				printEnrollment(a.e.stdout, u.Username, sf.GetSecret(), sf.GetOtpauthUrl())
			}
			return nil
		},
	}.command(e)
}

func newAdminUsersDisableCommand(e *env) *ffcli.Command {
	var reason string
	return adminSpec{
		path:  "admin users disable",
		args:  "--reason TEXT [flags] USERNAME",
		short: "stop a user from signing in and end its sessions now",
		long: "Disables USERNAME: it can no longer sign in, its sessions are revoked at once and\n" +
			"its watch streams end. Its payments in flight still finish. 'enable' undoes it.",
		example: "  paygate admin users disable --reason \"card reported stolen\" alice",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&reason, "reason", "", "why, for the audit log (required)")
		},
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args, "USERNAME"); err != nil {
				return err
			}
			if strings.TrimSpace(reason) == "" {
				return usageErrorf("--reason is required: it goes to the audit log")
			}
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.DisableUser(ctx, connect.NewRequest(&gatewayv1.DisableUserRequest{Username: args[0], Reason: reason}))
			if err != nil {
				return adminFailure("users disable "+args[0], err)
			}
			u := userToJSON(resp.Msg.GetUser())
			n := resp.Msg.GetRevokedSessions()
			return a.output(map[string]any{"user": u, "revoked_sessions": n}, func(w io.Writer) {
				fmt.Fprintf(w, "disabled %s; %d session(s) revoked\n", u.Username, n)
			})
		},
	}.command(e)
}

func newAdminUsersEnableCommand(e *env) *ffcli.Command {
	return adminSpec{
		path:    "admin users enable",
		args:    "[flags] USERNAME",
		short:   "let a disabled user sign in again",
		long:    "Enables USERNAME again after 'disable'.",
		example: "  paygate admin users enable alice",
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args, "USERNAME"); err != nil {
				return err
			}
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.EnableUser(ctx, connect.NewRequest(&gatewayv1.EnableUserRequest{Username: args[0]}))
			if err != nil {
				return adminFailure("users enable "+args[0], err)
			}
			u := userToJSON(resp.Msg.GetUser())
			return a.output(map[string]any{"user": u}, func(w io.Writer) { fmt.Fprintf(w, "enabled %s\n", u.Username) })
		},
	}.command(e)
}

func newAdminUsersResetPasswordCommand(e *env) *ffcli.Command {
	var ip initialPassword
	return adminSpec{
		path:  "admin users reset-password",
		args:  "[flags] USERNAME",
		short: "give a user a new initial password and end its sessions",
		long: "Sets a new initial password for USERNAME and revokes its sessions; the user\n" +
			"signs in with it and must change it first.\n" + initialPasswordHelp,
		example: "  paygate admin users reset-password --generate-password alice",
		flags:   ip.register,
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args, "USERNAME"); err != nil {
				return err
			}
			pw, generated, err := ip.get(ctx, a.e)
			if err != nil {
				return err
			}
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.ResetPassword(ctx, connect.NewRequest(&gatewayv1.ResetPasswordRequest{Username: args[0], InitialPassword: pw}))
			if err != nil {
				return adminFailure("users reset-password "+args[0], err)
			}
			u := userToJSON(resp.Msg.GetUser())
			n := resp.Msg.GetRevokedSessions()
			if a.cf.json {
				out := map[string]any{"user": u, "revoked_sessions": n}
				if generated {
					out["initial_password"] = pw
				}
				return printJSON(a.e.stdout, out)
			}
			fmt.Fprintf(a.e.stdout, "reset the password of %s; %d session(s) revoked\n", u.Username, n)
			printInitialPassword(a.e.stdout, u.Username, pw, generated)
			return nil
		},
	}.command(e)
}

func newAdminUsersSetRoleCommand(e *env) *ffcli.Command {
	return adminSpec{
		path:  "admin users set-role",
		args:  "[flags] USERNAME ROLE",
		short: "make a user a customer or an admin",
		long: "Changes USERNAME's role to ROLE (customer or admin) and revokes its sessions.\n" +
			"Making a user an admin enrolls a new second factor, printed this once. An admin\n" +
			"cannot remove its own admin role, and the last enabled admin cannot be demoted.",
		example: "  paygate admin users set-role carol admin",
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args, "USERNAME", "ROLE"); err != nil {
				return err
			}
			if args[1] != "customer" && args[1] != "admin" {
				return usageErrorf("ROLE %q: want customer or admin", args[1])
			}
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.SetRole(ctx, connect.NewRequest(&gatewayv1.SetRoleRequest{Username: args[0], Role: args[1]}))
			if err != nil {
				return adminFailure("users set-role "+args[0], err)
			}
			u := userToJSON(resp.Msg.GetUser())
			sf := resp.Msg.GetSecondFactor()
			if a.cf.json {
				out := map[string]any{"user": u}
				if sf != nil {
					out["totp_secret"], out["otpauth_url"] = sf.GetSecret(), sf.GetOtpauthUrl()
				}
				return printJSON(a.e.stdout, out)
			}
			fmt.Fprintf(a.e.stdout, "%s has the %s role now; its sessions were revoked\n", u.Username, u.Role)
			if sf != nil {
				printEnrollment(a.e.stdout, u.Username, sf.GetSecret(), sf.GetOtpauthUrl())
			}
			return nil
		},
	}.command(e)
}

// newAdminUsersLinkCommand is `users link` or, with link false, `users unlink`.
func newAdminUsersLinkCommand(e *env, link bool) *ffcli.Command {
	spec := adminSpec{
		path:    "admin users link",
		args:    "[flags] USERNAME ACCOUNT",
		short:   "link an account at a bank to a user",
		long:    "Links ACCOUNT to USERNAME. The bank must confirm that the account exists, is\nopen, and that its holder is the username; an account linked to another user is\nrefused (already_exists).",
		example: "  paygate admin users link erin bank2-2004",
	}
	if !link {
		spec.path, spec.short = "admin users unlink", "remove an account from a user"
		spec.long = "Unlinks ACCOUNT from USERNAME. The money stays at the bank; the user can no\nlonger pay from it or see it."
		spec.example = "  paygate admin users unlink erin bank2-2004"
	}
	spec.run = func(ctx context.Context, a *adminRun, args []string) error {
		if err := wantArgs(args, "USERNAME", "ACCOUNT"); err != nil {
			return err
		}
		svc, done, err := a.service()
		if err != nil {
			return err
		}
		defer done()
		var u *gatewayv1.User
		verb := "linked"
		if link {
			resp, err := svc.LinkAccount(ctx, connect.NewRequest(&gatewayv1.LinkAccountRequest{Username: args[0], AccountId: args[1]}))
			if err != nil {
				return adminFailure("users link "+args[0]+" "+args[1], err)
			}
			u = resp.Msg.GetUser()
		} else {
			verb = "unlinked"
			resp, err := svc.UnlinkAccount(ctx, connect.NewRequest(&gatewayv1.UnlinkAccountRequest{Username: args[0], AccountId: args[1]}))
			if err != nil {
				return adminFailure("users unlink "+args[0]+" "+args[1], err)
			}
			u = resp.Msg.GetUser()
		}
		uj := userToJSON(u)
		return a.output(map[string]any{"user": uj}, func(w io.Writer) {
			fmt.Fprintf(w, "%s %s: %s now has %s\n", verb, args[1], uj.Username, orDash(strings.Join(uj.Accounts, ", ")))
		})
	}
	return spec.command(e)
}
