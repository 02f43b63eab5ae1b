package rpcserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
	"github.com/paygate/paygate/gen/paygate/gateway/v1/gatewayv1connect"
	"github.com/paygate/paygate/internal/identity"
	"github.com/paygate/paygate/internal/pki"
)

// A request is logged before it is validated: its fields must not carry arbitrary amounts of
// client data into the log.
func TestMessageAttrsClipLongFields(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 100_000)
	attrs := appendMessageAttrs(nil, &gatewayv1.ExecutePaymentRequest{PaymentId: long, Currency: long, Amount: 5})
	attrs = appendMessageAttrs(attrs, &bankv1.CommitTransactionRequest{TransactionId: long})
	seen := map[string]string{}
	for _, a := range attrs {
		seen[a.Key] = a.Value.String()
	}
	for _, k := range []string{"payment_id", "currency", "transaction_id"} {
		v, ok := seen[k]
		if !ok {
			t.Fatalf("%s not logged: %v", k, attrs)
		}
		if len(v) > maxLoggedField+32 || !strings.HasSuffix(v, "…(+99872 bytes)") {
			t.Errorf("%s logged as %d bytes (%.80q), want it clipped with what was cut", k, len(v), v)
		}
	}
	short := appendMessageAttrs(nil, &gatewayv1.ExecutePaymentRequest{PaymentId: "0b7d5c1e-0000-4000-8000-000000000001"})
	if len(short) != 1 || short[0].Value.String() != "0b7d5c1e-0000-4000-8000-000000000001" {
		t.Errorf("a valid id was changed: %v", short)
	}
}

func TestClipCutsOnARuneBoundary(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		n    int
		want string
	}{
		{"short", "alice", 8, "alice"},
		{"exact", "abcdefgh", 8, "abcdefgh"},
		{"ascii", "abcdefghij", 8, "abcdefgh…(+2 bytes)"},
		// "é" is 2 bytes, "€" 3, "𝄞" 4: a cut inside one moves back to its start.
		{"inside a 2-byte rune", "abcdefgé", 8, "abcdefg…(+2 bytes)"},
		{"inside a 3-byte rune", "abcdef€x", 8, "abcdef…(+4 bytes)"},
		{"inside a 4-byte rune", "abcde𝄞xyz", 8, "abcde…(+7 bytes)"},
		{"after a whole rune", "abcdef€xyz", 9, "abcdef€…(+3 bytes)"},
		// In invalid UTF-8 the cut moves back at most 3 bytes.
		{"continuation bytes", strings.Repeat("\x80", 12), 8, strings.Repeat("\x80", 5) + "…(+7 bytes)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := clipTo(tc.in, tc.n)
			if got != tc.want {
				t.Errorf("clipTo(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
			}
			if utf8.ValidString(tc.in) && !utf8.ValidString(got) {
				t.Errorf("clipTo(%q, %d) = %q is not valid UTF-8", tc.in, tc.n, got)
			}
		})
	}
}

// What handlers record (the user, attributes) is clipped like request fields.
func TestCallInfoClips(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("u", 1<<20)
	_, ci := NewCallContext(context.Background())
	ci.SetUser(long)
	ci.Add(slog.String("note", long), slog.Group("g", slog.String("inner", long)), slog.Any("err", errors.New(long)),
		slog.Bool("replayed", true), slog.Any("short", errors.New("short error")))
	if u := ci.User(); len(u) > maxLoggedField+32 || !strings.HasSuffix(u, " bytes)") {
		t.Errorf("user recorded as %d bytes (%.80q)", len(u), u)
	}
	total := 0
	var walk func(attrs []slog.Attr)
	walk = func(attrs []slog.Attr) {
		for _, a := range attrs {
			if a.Value.Kind() == slog.KindGroup {
				walk(a.Value.Group())
				continue
			}
			total += len(a.Value.String())
		}
	}
	walk(ci.Attrs())
	if total > 2*maxLoggedField+maxLoggedMessage+200 {
		t.Errorf("attributes hold %d bytes: %v", total, ci.Attrs())
	}
	attrs := ci.Attrs()
	if got := attrs[3].Value; got.Kind() != slog.KindBool || !got.Bool() {
		t.Errorf("a bool attribute was changed: %v", attrs[3])
	}
	if got := attrs[4].Value; got.Kind() != slog.KindAny || got.String() != "short error" {
		t.Errorf("a short error attribute was changed: %v", attrs[4])
	}
}

// A username of almost a megabyte (just under the message size limit, so that the request is
// read and then refused by validation) must not be copied into the log line of the login.
func TestLongUsernameLoggedClipped(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := pki.Generate(dir, pki.Options{Hosts: []string{"127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	srvFiles := pki.LeafFiles(dir, identity.Identity{Role: identity.RoleGateway})
	serverTLS, err := pki.ServerTLS(pki.CAFile(dir), srvFiles.Cert, srvFiles.Key, tls.RequireAndVerifyClientCert)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs strings.Builder
	sink := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	})
	srv, err := New(Config{
		Name:   "gateway",
		Logger: slog.New(slog.NewJSONHandler(sink, nil)),
		Policy: Policy{gatewayv1connect.AuthServiceLoginProcedure: AccessClient},
		TLS:    serverTLS,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle(gatewayv1connect.NewAuthServiceHandler(gatewayv1connect.UnimplementedAuthServiceHandler{}, srv.HandlerOptions()...))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})

	cliFiles := pki.LeafFiles(dir, identity.Identity{Role: identity.RoleClient, Name: "cli"})
	clientTLS, err := pki.ClientTLS(pki.CAFile(dir), cliFiles.Cert, cliFiles.Key)
	if err != nil {
		t.Fatal(err)
	}
	hc := NewHTTPClient(clientTLS)
	t.Cleanup(hc.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	username := strings.Repeat("m", DefaultReadMaxBytes-64)
	for _, opts := range [][]connect.ClientOption{ClientOptions(), nil} {
		auth := gatewayv1connect.NewAuthServiceClient(hc, "https://"+ln.Addr().String(), opts...)
		_, err = auth.Login(ctx, connect.NewRequest(&gatewayv1.LoginRequest{Username: username, Password: "pw"}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("login with a %d-byte username: %v; want invalid_argument", len(username), err)
		}
	}

	mu.Lock()
	out := logs.String()
	mu.Unlock()
	var lines int
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 4<<20), 4<<20)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line is not JSON: %.200q", sc.Text())
		}
		if rec["procedure"] != gatewayv1connect.AuthServiceLoginProcedure {
			continue
		}
		lines++
		if n := len(sc.Bytes()); n > 2048 {
			t.Errorf("the login's log line is %d bytes: %.300s", n, sc.Text())
		}
		user, _ := rec["user"].(string)
		if !strings.HasPrefix(user, "mmmm") || !strings.HasSuffix(user, " bytes)") {
			t.Errorf("user logged as %.200q; want the start of the name and how much was cut", user)
		}
	}
	if lines != 2 {
		t.Fatalf("%d log lines of logins, want 2:\n%.2000s", lines, out)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
