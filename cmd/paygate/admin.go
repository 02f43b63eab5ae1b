package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"

	"connectrpc.com/connect"
	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/paygate/paygate/client"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/services/gateway"
)

// paygate admin: the operators' commands. Most call the gateway's AdminService as the admin of
// the saved session (paygate login --totp CODE with an admin certificate); bootstrap and
// audit verify work on the gateway's store directly. The subcommands live in admin_*.go.

func init() { register(newAdminCommand) }

func newAdminCommand(e *env) *ffcli.Command {
	return adminGroup(e, "admin", "operate paygate: users, accounts, deposits, payments, in-doubt work, the audit log",
		"Operators' commands. First make the first admin on the gateway's store:\n"+
			"  paygate admin bootstrap --data .paygate/data --username ops\n"+
			"then sign in with the second factor and an admin certificate ('paygate certs\n"+
			"--admins ops'); the other commands use that session:\n"+
			"  paygate login --certs certs --cert certs/admin-ops.pem --key certs/admin-ops-key.pem --totp 123456 ops\n"+
			"  paygate admin users list\n\n"+
			"Every command prints a table, or one line of JSON with --json. Every call is in\n"+
			"the audit log, refused or not. Exit codes: 0 ok, 1 refused or failed, 2 usage.",
		newAdminBootstrapCommand(e),
		newAdminAuditCommand(e),
		newAdminUsersCommand(e),
		newAdminAccountsCommand(e),
		newAdminDepositCommand(e, false),
		newAdminDepositCommand(e, true),
		newAdminEntriesCommand(e),
		newAdminPaymentsCommand(e),
		newAdminOpsCommand(e),
		newAdminRedriveCommand(e),
	)
}

// adminGroup is a command that only holds subcommands, e.g. `paygate admin users`.
func adminGroup(e *env, path, short, long string, subs ...*ffcli.Command) *ffcli.Command {
	name := path[strings.LastIndexByte(path, ' ')+1:]
	return &ffcli.Command{
		Name:        name,
		ShortUsage:  "paygate " + path + " <subcommand> [flags]",
		ShortHelp:   short,
		LongHelp:    long,
		FlagSet:     newFlagSet(e, path),
		Options:     ffOptions(),
		Subcommands: subs,
		Exec: func(_ context.Context, args []string) error {
			if len(args) > 0 {
				fmt.Fprintf(e.stderr, "paygate: %s: unknown subcommand %q\n\n", path, args[0])
			}
			return flag.ErrHelp
		},
	}
}

// adminSpec describes one subcommand of paygate admin that calls the gateway.
type adminSpec struct {
	// path is the command's words after "paygate", e.g. "admin users list".
	path string
	// args is the usage after the path, e.g. "[flags] NAME".
	args    string
	short   string
	long    string
	example string
	// flags registers the command's own flags; clientFlags are there already.
	flags func(fs *flag.FlagSet)
	run   func(ctx context.Context, a *adminRun, args []string) error
}

// adminRun is one run of an admin subcommand.
type adminRun struct {
	e  *env
	cf *clientFlags
}

func (s adminSpec) command(e *env) *ffcli.Command {
	fs := newFlagSet(e, s.path)
	cf := &clientFlags{e: e}
	cf.register(fs)
	if s.flags != nil {
		s.flags(fs)
	}
	long := s.long
	if s.example != "" {
		long += "\n\nExample:\n" + s.example
	}
	return &ffcli.Command{
		Name:       s.path[strings.LastIndexByte(s.path, ' ')+1:],
		ShortUsage: "paygate " + s.path + " " + s.args,
		ShortHelp:  s.short,
		LongHelp:   long,
		FlagSet:    fs,
		Options:    ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			args, err := parseInterleaved(fs, args)
			if err != nil {
				return err
			}
			return usageHint(s.path, s.run(ctx, &adminRun{e: e, cf: cf}, args))
		},
	}
}

// usageHint makes a usage error of a nested command point at that command's help (run names
// only the top-level command).
func usageHint(path string, err error) error {
	var ue *usageError
	if errors.As(err, &ue) {
		return &exitError{code: exitUsage, msg: ue.msg + "\nRun 'paygate " + path + " --help' for usage."}
	}
	return err
}

// parseInterleaved parses the flags that follow positional arguments too, so that
// `paygate admin users get alice --json` works: the flag package stops at the first
// argument that is not a flag.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		pos = append(pos, args[0])
		if err := fs.Parse(args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &exitError{code: exitUsage} // the flag package printed why
		}
		args = fs.Args()
	}
	return pos, nil
}

// wantArgs checks the number of positional arguments; names are their names for the message.
func wantArgs(args []string, names ...string) error {
	if len(args) == len(names) {
		return nil
	}
	if len(names) == 0 {
		return usageErrorf("unexpected arguments: %s", strings.Join(args, " "))
	}
	return usageErrorf("want %s, got %d argument(s)", strings.Join(names, " "), len(args))
}

// service connects as the logged-in admin and returns the gateway's AdminService. It presents
// the certificate the login presented (the admin certificate; the token is bound to it) unless
// --cert and --key name another: --certs fills in the CA only.
func (a *adminRun) service() (gatewayv1connect.AdminServiceClient, func(), error) {
	_, c, err := connectAsLogin(a.cf)
	if err != nil {
		return nil, nil, err
	}
	return c.Admin(), func() { c.Close() }, nil
}

// connectAsLogin connects as the logged-in user presenting the certificate its login
// presented, unless --cert and --key name another.
func connectAsLogin(cf *clientFlags) (session, *client.Client, error) {
	s, err := cf.loggedIn()
	if err != nil {
		return s, nil, err
	}
	if cf.cert == "" && cf.key == "" && s.Cert != "" && s.Key != "" {
		cf.cert, cf.key = s.Cert, s.Key
	}
	c, _, err := cf.connect(s, false, false)
	return s, c, err
}

// output prints v as one line of JSON with --json, else what table writes, through a
// tabwriter that aligns tab-separated columns.
func (a *adminRun) output(v any, table func(w io.Writer)) error {
	if a.cf.json {
		return printJSON(a.e.stdout, v)
	}
	tw := tabwriter.NewWriter(a.e.stdout, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// adminFailure is an AdminService error as the CLI prints it: the action, the gateway's code
// and message, its reason, and what to do about the usual ones.
func adminFailure(action string, err error) error {
	var hint string
	switch client.Reason(err) {
	case "admin_certificate_required":
		hint = "log in again presenting an admin certificate: paygate login --cert DIR/admin-NAME.pem --key DIR/admin-NAME-key.pem --totp CODE USERNAME"
	case "second_factor_required":
		hint = "log in again with the current code of your authenticator app: paygate login --totp CODE USERNAME"
	case "admin_required":
		hint = "log in as a user with the admin role"
	case client.ReasonPasswordChangeRequired:
		hint = "run 'paygate change-password' first"
	default:
		if connect.CodeOf(err) == connect.CodeUnauthenticated {
			hint = "the session ended: paygate login --totp CODE USERNAME"
		}
	}
	err = fmt.Errorf("%s: %w", action, withReason(err))
	if hint != "" {
		return fmt.Errorf("%w\n  %s", err, hint)
	}
	return err
}

// storeFlags are --data and --database-url of the commands that work on the gateway's store
// directly.
type storeFlags struct{ data, databaseURL string }

func (s *storeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.data, "data", "", "the gateway's data `DIR` (its --data), holding gateway.db")
	fs.StringVar(&s.databaseURL, "database-url", "", "the gateway's PostgreSQL database (its --database-url), postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
}

func (s *storeFlags) given() bool { return s.data != "" || s.databaseURL != "" }

func (s *storeFlags) location() (gateway.StoreLocation, error) {
	switch {
	case s.data != "" && s.databaseURL != "":
		return gateway.StoreLocation{}, usageErrorf("give --data or --database-url, not both")
	case !s.given():
		return gateway.StoreLocation{}, usageErrorf("where is the gateway's store? give --data DIR or --database-url URL, as the gateway was given")
	case s.databaseURL != "":
		if err := checkGatewayDatabaseURL(s.databaseURL); err != nil {
			return gateway.StoreLocation{}, err
		}
	}
	return gateway.StoreLocation{DataDir: s.data, DatabaseURL: s.databaseURL}, nil
}

// localOperator names the person running a local command, for the audit log: "local:<login>".
func localOperator() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if name == "" {
		name = "unknown"
	}
	return "local:" + name
}

func newAdminBootstrapCommand(e *env) *ffcli.Command {
	fs := newFlagSet(e, "admin bootstrap")
	var sf storeFlags
	sf.register(fs)
	username := fs.String("username", "", "the admin's username: 3 to 32 letters, digits, '.', '_' or '-', starting with a letter (required)")
	fromStdin := fs.Bool("password-stdin", false, "read the password from stdin (one line), also at a terminal")
	operator := fs.String("operator", localOperator(), "who runs this, for the audit log")
	asJSON := fs.Bool("json", false, "print JSON for scripts instead of text")
	return &ffcli.Command{
		Name:       "bootstrap",
		ShortUsage: "paygate admin bootstrap --data DIR | --database-url URL --username NAME [flags]",
		ShortHelp:  "create the first admin on the gateway's store, with its second factor",
		LongHelp: "Creates the first admin directly in the gateway's store (the gateway may be\n" +
			"running), with a password and a new TOTP second factor, and appends a\n" +
			"'bootstrap' entry to the audit log. It prints the TOTP secret and its otpauth://\n" +
			"URL once: add them to an authenticator app now. It is refused when the store has\n" +
			"an enabled admin with a second factor already: that admin makes the others\n" +
			"('paygate admin users create --role admin'). The password, at least 10\n" +
			"characters, comes from PAYGATE_ADMIN_PASSWORD, from stdin (--password-stdin), or\n" +
			"from a prompt that does not echo it; it is never an argument.\n\n" +
			"Example:\n" +
			"  paygate admin bootstrap --data .paygate/data --username ops\n" +
			"  paygate certs --out certs --admins ops\n" +
			"  paygate login --certs certs --cert certs/admin-ops.pem --key certs/admin-ops-key.pem --totp 123456 ops",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) (err error) {
			defer func() { err = usageHint("admin bootstrap", err) }()
			if err := wantArgs(args); err != nil {
				return err
			}
			at, err := sf.location()
			if err != nil {
				return err
			}
			if *username == "" {
				return usageErrorf("--username is required")
			}
			pw := os.Getenv("PAYGATE_ADMIN_PASSWORD")
			if pw == "" {
				pw, err = newSecretReader(e, *fromStdin).newPassword(ctx, "Password", "set PAYGATE_ADMIN_PASSWORD, or pipe it to --password-stdin")
				if err != nil {
					return err
				}
			} else if err := checkNewPassword(pw); err != nil {
				return err
			}
			enr, err := gateway.BootstrapAdmin(ctx, at, *username, pw, *operator)
			if errors.Is(err, gateway.ErrAdminExists) {
				return errors.New("admin bootstrap: the store has an admin already; sign in as that admin and run 'paygate admin users create --role admin NAME'")
			}
			if err != nil {
				return fmt.Errorf("admin bootstrap: %w", err)
			}
			if *asJSON {
				return printJSON(e.stdout, map[string]any{"username": enr.Username, "totp_secret": enr.Secret, "otpauth_url": enr.URL})
			}
			fmt.Fprintf(e.stdout, "created admin %s\n", enr.Username)
			printEnrollment(e.stdout, enr.Username, enr.Secret, enr.URL)
			n := enr.Username
			fmt.Fprintf(e.stdout, "next: paygate certs --out DIR --admins %s (its admin certificate), then\n  paygate login --certs DIR --cert DIR/admin-%s.pem --key DIR/admin-%s-key.pem --totp CODE %s\n", n, n, n, n)
			return nil
		},
	}
}

// printEnrollment prints a new second factor and says to keep it.
func printEnrollment(w io.Writer, username, secret, url string) {
	fmt.Fprintf(w, "second factor of %s (TOTP, 6 digits, 30 s), shown this once:\n", username)
	fmt.Fprintf(w, "  secret       %s\n", secret)
	fmt.Fprintf(w, "  otpauth URL  %s\n", url)
	fmt.Fprintln(w, "store them now in an authenticator app (or a QR code of the URL), and nowhere in plain text")
}

func newAdminAuditCommand(e *env) *ffcli.Command {
	return adminGroup(e, "admin audit", "list the audit log of admin actions, or verify its hash chain",
		"The audit log has an entry for every admin call, refused or not, and for each\n"+
			"bootstrap; each entry carries the SHA-256 of the one before, so an edited or\n"+
			"removed entry breaks the chain at that point.",
		newAdminAuditVerifyCommand(e),
		newAdminAuditListCommand(e),
	)
}

func newAdminAuditListCommand(e *env) *ffcli.Command {
	var pg paging
	var actor string
	return adminSpec{
		path:    "admin audit list",
		args:    "[flags]",
		short:   "list the audit log, newest first",
		long:    "Lists audit entries newest first: when, who (and with which certificate), what,\non what, and the outcome (ok, or the code and reason of a refusal).",
		example: "  paygate admin audit list --actor ops --limit 20",
		flags: func(fs *flag.FlagSet) {
			pg.register(fs, 50, 500)
			fs.StringVar(&actor, "actor", "", "only this admin's entries")
		},
		run: func(ctx context.Context, a *adminRun, args []string) error {
			if err := wantArgs(args); err != nil {
				return err
			}
			if err := pg.check(); err != nil {
				return err
			}
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.ListAuditLog(ctx, connect.NewRequest(&gatewayv1.ListAuditLogRequest{
				Actor: actor, PageSize: pg.size(), PageToken: pg.token}))
			if err != nil {
				return adminFailure("audit list", err)
			}
			out := struct {
				Entries       []auditEntryJSON `json:"entries"`
				NextPageToken string           `json:"next_page_token"`
			}{Entries: []auditEntryJSON{}, NextPageToken: resp.Msg.GetNextPageToken()}
			for _, en := range resp.Msg.GetEntries() {
				out.Entries = append(out.Entries, auditEntryToJSON(en))
			}
			return a.output(out, func(w io.Writer) {
				writeAuditTable(w, out.Entries)
				pg.next(w, out.NextPageToken)
			})
		},
	}.command(e)
}

func newAdminAuditVerifyCommand(e *env) *ffcli.Command {
	spec := adminSpec{
		path:  "admin audit verify",
		args:  "[--data DIR | --database-url URL] [flags]",
		short: "check the audit log's hash chain from its first entry",
		long: "Checks every entry's hash and its link to the one before, and reports the first\n" +
			"broken entry. With --data or --database-url it reads the gateway's store\n" +
			"directly (no gateway or login needed); without, it asks the gateway as the\n" +
			"logged-in admin. Exit code 0 when the chain is whole, 1 when it is broken.",
		example: "  paygate admin audit verify --data .paygate/data\n  audit log OK: 42 entries",
	}
	var sf storeFlags
	spec.flags = sf.register
	spec.run = func(ctx context.Context, a *adminRun, args []string) error {
		if err := wantArgs(args); err != nil {
			return err
		}
		var v gateway.AuditVerification
		if sf.given() {
			at, err := sf.location()
			if err != nil {
				return err
			}
			if v, err = gateway.VerifyAuditLog(ctx, at); err != nil {
				return fmt.Errorf("audit verify: %w", err)
			}
		} else {
			svc, done, err := a.service()
			if err != nil {
				return err
			}
			defer done()
			resp, err := svc.VerifyAuditLog(ctx, connect.NewRequest(&gatewayv1.VerifyAuditLogRequest{}))
			if err != nil {
				return adminFailure("audit verify", err)
			}
			m := resp.Msg
			v = gateway.AuditVerification{OK: m.GetOk(), Entries: m.GetEntries(), FirstBroken: m.GetFirstBrokenSeq(), Problem: m.GetProblem()}
		}
		if err := a.output(map[string]any{"ok": v.OK, "entries": v.Entries, "first_broken_seq": v.FirstBroken, "problem": v.Problem}, func(w io.Writer) {
			fmt.Fprintln(w, auditVerdict(v))
		}); err != nil {
			return err
		}
		if !v.OK {
			return &exitError{code: exitFailure}
		}
		return nil
	}
	return spec.command(e)
}

// auditVerdict is audit verify's line: "audit log OK: 42 entries" or "audit log BROKEN at
// entry 7: ...".
func auditVerdict(v gateway.AuditVerification) string {
	if v.OK && v.Entries == 1 {
		return "audit log OK: 1 entry"
	}
	if v.OK {
		return fmt.Sprintf("audit log OK: %d entries", v.Entries)
	}
	return fmt.Sprintf("audit log BROKEN at entry %d: %s", v.FirstBroken, v.Problem)
}
