package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/paygate/paygate/client"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/internal/logging"
)

// The client subcommands (login, logout, register, pay, balance, history, queue, watch) share
// the flags below, the session file in the config directory and the queue in the state
// directory. See docs/CLIENT.md.

// exitPaymentFailed is the exit code of a payment that the gateway or a bank refused.
const exitPaymentFailed = 3

// exitError ends a command with a given exit code. With an empty message nothing more is
// printed (the command already said why).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }
func (e *exitError) ExitCode() int { return e.code }

// defaultGateway is the gateway address when nothing else names one: `paygate dev`'s.
const defaultGateway = "127.0.0.1:8443"

// sessionFile is the name of the file in the config directory that keeps the login.
const sessionFile = "session.json"

// session is CONFIG/session.json (mode 0600): where the gateway is, which certificate to
// present, and the token of the logged-in user.
type session struct {
	// Gateway is the gateway's address, or its replicas' addresses separated by commas, as
	// --gateway gives them.
	Gateway    string    `json:"gateway,omitempty"`
	CA         string    `json:"ca,omitempty"`
	Cert       string    `json:"cert,omitempty"`
	Key        string    `json:"key,omitempty"`
	Username   string    `json:"username,omitempty"`
	Token      string    `json:"token,omitempty"`
	ExpireTime time.Time `json:"expire_time,omitzero"`
}

// clientFlags are the flags of every client subcommand.
type clientFlags struct {
	e                    *env
	gateway              string
	certs, ca, cert, key string
	configDir, stateDir  string
	devDir               string
	json                 bool
	timeout              time.Duration
	retryMax             time.Duration
	verbose              bool
}

func (f *clientFlags) register(fs *flag.FlagSet) {
	fs.Func("gateway", "gateway API address `HOST:PORT`, or for several gateway replicas a comma-separated list HOST:PORT,HOST:PORT,... tried in turn: a call that cannot reach one moves on to the next (default: the last login's, else .paygate/dev.json's, else "+defaultGateway+")",
		func(v string) error {
			// The list as the bank's --gateway takes it: HOST:PORT or https://HOST:PORT, each once.
			if err := (&gatewayAddrs{}).Set(v); err != nil {
				return err
			}
			f.gateway = v
			return nil
		})
	fs.StringVar(&f.certs, "certs", "", "directory made by 'paygate certs'; fills in --ca, --cert and --key (ca.pem, client-cli.pem, client-cli-key.pem)")
	fs.StringVar(&f.ca, "ca", "", "CA certificate (PEM) that signed the gateway's certificate")
	fs.StringVar(&f.cert, "cert", "", "client certificate (PEM)")
	fs.StringVar(&f.key, "key", "", "client private key (PEM)")
	fs.StringVar(&f.configDir, "config-dir", "", "where the login is kept (default: the user's config directory/paygate)")
	fs.StringVar(&f.stateDir, "state-dir", "", "where the offline queue is kept (default: $XDG_STATE_HOME/paygate or ~/.local/state/paygate)")
	fs.StringVar(&f.devDir, "dev-dir", ".paygate", "directory of a running 'paygate dev', whose dev.json gives defaults")
	fs.BoolVar(&f.json, "json", false, "print JSON for scripts instead of text")
	fs.DurationVar(&f.timeout, "timeout", client.DefaultTimeout, "bound on each call to the gateway")
	fs.DurationVar(&f.retryMax, "retry-max", 30*time.Second, "longest wait between retries, and the health probe period while the gateway is unreachable")
	fs.BoolVar(&f.verbose, "verbose", false, "log attempts, retries and queue activity to stderr")
}

func (f *clientFlags) configPath() (string, error) {
	if f.configDir != "" {
		return f.configDir, nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("config directory: %w (use --config-dir)", err)
	}
	return filepath.Join(d, "paygate"), nil
}

func (f *clientFlags) statePath() (string, error) {
	if f.stateDir != "" {
		return f.stateDir, nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "paygate"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("state directory: %w (use --state-dir)", err)
	}
	return filepath.Join(home, ".local", "state", "paygate"), nil
}

func (f *clientFlags) loadSession() (session, error) {
	var s session
	dir, err := f.configPath()
	if err != nil {
		return s, err
	}
	data, err := os.ReadFile(filepath.Join(dir, sessionFile))
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("%s: %w", filepath.Join(dir, sessionFile), err)
	}
	return s, nil
}

// saveSession writes the session file with mode 0600, atomically.
func (f *clientFlags) saveSession(s session) error {
	dir, err := f.configPath()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".session-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, sessionFile))
}

// readDevInfo returns DIR/dev.json of a running `paygate dev`, if there is one.
func (f *clientFlags) readDevInfo() (devInfo, bool) {
	var info devInfo
	data, err := os.ReadFile(filepath.Join(f.devDir, "dev.json"))
	if err != nil || json.Unmarshal(data, &info) != nil {
		return info, false
	}
	return info, true
}

// target is where to connect and with which certificate.
type target struct {
	// gateway is one address or several, comma-separated (client.New takes either).
	gateway, ca, cert, key string
}

// resolve picks the gateway and certificate: flags (and PAYGATE_* variables) first, then the
// session of the last login, then dev.json of a running `paygate dev`.
func (f *clientFlags) resolve(s session) (target, error) {
	dev, haveDev := f.readDevInfo()
	t := target{gateway: f.gateway, ca: f.ca, cert: f.cert, key: f.key}
	if f.certs != "" {
		if t.ca == "" {
			t.ca = filepath.Join(f.certs, "ca.pem")
		}
		if t.cert == "" {
			t.cert = filepath.Join(f.certs, "client-cli.pem")
		}
		if t.key == "" {
			t.key = filepath.Join(f.certs, "client-cli-key.pem")
		}
	}
	pick := func(dst *string, vals ...string) {
		for _, v := range vals {
			if *dst == "" {
				*dst = v
			}
		}
	}
	pick(&t.gateway, s.Gateway)
	pick(&t.ca, s.CA)
	pick(&t.cert, s.Cert)
	pick(&t.key, s.Key)
	if haveDev {
		if len(dev.APIs) > 1 {
			// `paygate dev --gateways N`: every replica, the first one first.
			pick(&t.gateway, strings.Join(dev.APIs, ","))
		}
		pick(&t.gateway, dev.API)
		pick(&t.ca, dev.Certs.CA)
		pick(&t.cert, dev.Certs.Cert)
		pick(&t.key, dev.Certs.Key)
	}
	pick(&t.gateway, defaultGateway)
	if t.ca == "" || t.cert == "" || t.key == "" {
		return t, usageErrorf("no client certificate: give --certs DIR (or --ca, --cert and --key), or run 'paygate dev' here")
	}
	for _, p := range []*string{&t.ca, &t.cert, &t.key} {
		if abs, err := filepath.Abs(*p); err == nil {
			*p = abs
		}
	}
	return t, nil
}

func (f *clientFlags) logger() *slog.Logger {
	if !f.verbose {
		return nil
	}
	l, _ := logging.New(f.e.stderr, logging.FormatText, slog.LevelDebug)
	return l
}

// connect builds a client of the resolved gateway with the session's token. With queue, the
// client has the offline queue of the state directory (and its sender, unless noSender).
// connectLoggedIn connects as the logged-in user, without the offline queue: what the
// commands that only read or sign out need.
func (f *clientFlags) connectLoggedIn() (session, *client.Client, error) {
	s, err := f.loggedIn()
	if err != nil {
		return s, nil, err
	}
	c, _, err := f.connect(s, false, false)
	return s, c, err
}

func (f *clientFlags) connect(s session, queue, noSender bool, extra ...client.Option) (*client.Client, target, error) {
	t, err := f.resolve(s)
	if err != nil {
		return nil, t, err
	}
	opts := []client.Option{
		client.WithTLSFiles(t.ca, t.cert, t.key),
		client.WithTimeout(f.timeout),
		client.WithRetry(client.RetryPolicy{MaxBackoff: f.retryMax, InitialBackoff: min(200*time.Millisecond, f.retryMax)}),
		client.WithToken(s.Token),
		client.WithUsername(s.Username),
	}
	if l := f.logger(); l != nil {
		opts = append(opts, client.WithLogger(l))
	}
	if queue {
		dir, err := f.statePath()
		if err != nil {
			return nil, t, err
		}
		opts = append(opts, client.WithQueue(dir))
		if noSender {
			opts = append(opts, client.WithoutSender())
		}
	}
	c, err := client.New(t.gateway, append(opts, extra...)...)
	return c, t, err
}

// displayAddr is a client's base URL as the user wrote an address: HOST:PORT.
func displayAddr(url string) string { return strings.TrimPrefix(url, "https://") }

// loggedIn returns the session, or an error telling the user to log in.
func (f *clientFlags) loggedIn() (session, error) {
	s, err := f.loadSession()
	if err != nil {
		return s, err
	}
	if s.Token == "" {
		return s, errors.New("not logged in: run 'paygate login USERNAME'")
	}
	return s, nil
}

// printJSON writes v as one line of JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// paymentJSON is a payment in --json output.
type paymentJSON struct {
	PaymentID     string     `json:"payment_id"`
	Status        string     `json:"status"`
	From          string     `json:"from_account"`
	To            string     `json:"to_account"`
	Amount        int64      `json:"amount"`
	AmountDecimal string     `json:"amount_decimal"`
	Currency      string     `json:"currency"`
	Description   string     `json:"description,omitempty"`
	Reason        string     `json:"reason,omitempty"`
	Message       string     `json:"message,omitempty"`
	Replayed      bool       `json:"replayed,omitempty"`
	Attempts      int        `json:"attempts,omitempty"`
	CreateTime    *time.Time `json:"create_time,omitempty"`
	DecideTime    *time.Time `json:"decide_time,omitempty"`
	// RefundedAmount is how much of Amount succeeded refunds gave back.
	RefundedAmount int64 `json:"refunded_amount,omitempty"`
	// RefundOf is set on a refund: the payment it gives money back for.
	RefundOf string `json:"refund_of,omitempty"`
}

func statusName(s gatewayv1.PaymentStatus) string {
	switch s {
	case gatewayv1.PaymentStatus_PAYMENT_STATUS_PROCESSING:
		return "processing"
	case gatewayv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED:
		return string(client.StatusSucceeded)
	case gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED:
		return string(client.StatusFailed)
	}
	return "unspecified"
}

func paymentToJSON(p *client.Payment) paymentJSON {
	out := paymentJSON{PaymentID: p.GetPaymentId(), Status: statusName(p.GetStatus()), From: p.GetFromAccount(), To: p.GetToAccount(),
		Amount: p.GetAmount(), AmountDecimal: client.FormatAmount(p.GetAmount(), p.GetCurrency()), Currency: p.GetCurrency(),
		Description: p.GetDescription(), Message: p.GetFailureMessage(),
		RefundedAmount: p.GetRefundedAmount(), RefundOf: p.GetRefundOf()}
	if p.GetStatus() == gatewayv1.PaymentStatus_PAYMENT_STATUS_FAILED {
		out.Reason = client.FailureReasonName(p.GetFailureReason())
	}
	if p.GetCreateTime() != nil {
		t := p.GetCreateTime().AsTime()
		out.CreateTime = &t
	}
	if p.GetDecideTime() != nil {
		t := p.GetDecideTime().AsTime()
		out.DecideTime = &t
	}
	return out
}

func resultToJSON(r client.Result) paymentJSON {
	out := paymentJSON{PaymentID: r.ID, Status: string(r.Status), From: r.Request.From, To: r.Request.To, Amount: r.Request.Amount,
		AmountDecimal: client.FormatAmount(r.Request.Amount, r.Request.Currency), Currency: r.Request.Currency,
		Description: r.Request.Description, Reason: r.Reason, Message: r.Message, Replayed: r.Replayed, Attempts: r.Attempts}
	if r.Payment != nil {
		pj := paymentToJSON(r.Payment)
		out.CreateTime, out.DecideTime = pj.CreateTime, pj.DecideTime
	}
	return out
}

// paymentLine is a payment in text output, with what was refunded of it, or the payment a
// refund gives money back for:
//
//	succeeded  0198c2d4-...  bank1-1001 -> bank2-2002  25.00 USD  refunded 5.00
//	succeeded  0198c2d5-...  bank2-2002 -> bank1-1001  5.00 USD  refund of 0198c2d4-...
func paymentLine(p paymentJSON) string {
	s := fmt.Sprintf("%-10s %s  %s -> %s  %s %s", p.Status, p.PaymentID, p.From, p.To, p.AmountDecimal, p.Currency)
	if p.RefundOf != "" {
		s += "  refund of " + p.RefundOf
	}
	if p.RefundedAmount > 0 {
		s += "  refunded " + client.FormatAmount(p.RefundedAmount, p.Currency)
	}
	if p.Reason != "" {
		s += "  " + p.Reason
		if p.Message != "" {
			s += ": " + p.Message
		}
	}
	return s
}

// readPassword returns --password, or a line read from stdin (prompting when it is a
// terminal).
func readPassword(e *env, flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		fmt.Fprint(e.stderr, "Password: ")
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		return "", usageErrorf("no password: give --password (or PAYGATE_PASSWORD), or type it on stdin")
	}
	return line, nil
}

// reportUnreported prints the outcomes of queued payments that nobody was told about yet, and
// records that they were told. It returns how many of them failed.
func reportUnreported(ctx context.Context, e *env, q *client.Queue, asJSON bool) int {
	if q == nil {
		return 0
	}
	list, err := q.Unreported(ctx)
	if err != nil || len(list) == 0 {
		return 0
	}
	failed := 0
	ids := make([]string, 0, len(list))
	for _, p := range list {
		ids = append(ids, p.Request.ID)
		if p.Status == client.StatusFailed {
			failed++
		}
		if asJSON {
			printJSON(e.stdout, map[string]any{"queued_outcome": resultToJSON(p.Result)})
		} else {
			fmt.Fprintf(e.stdout, "queued payment settled: %s\n", paymentLine(resultToJSON(p.Result)))
		}
	}
	q.MarkReported(ctx, ids...)
	return failed
}

func noArgs(args []string) error {
	if len(args) > 0 {
		return usageErrorf("unexpected arguments: %s", strings.Join(args, " "))
	}
	return nil
}
