package rpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	bankv1 "github.com/paygate/paygate/gen/paygate/bank/v1"
	"github.com/paygate/paygate/internal/identity"
)

// AttemptHeader carries the attempt number of a call: absent or 1 on the first try, 2 on the
// first retry, and so on. Clients that retry set it so that servers can flag retries in logs.
const AttemptHeader = "Paygate-Attempt"

// LogMessage is the message of the one log line written per call.
const LogMessage = "rpc"

// Small interfaces the logging interceptor uses to pick fields out of request messages without
// logging whole messages, which may carry passwords.
type (
	paymentIDGetter     interface{ GetPaymentId() string }
	transactionIDGetter interface{ GetTransactionId() string }
	amountGetter        interface{ GetAmount() int64 }
	currencyGetter      interface{ GetCurrency() string }
	usernameGetter      interface{ GetUsername() string }
	legsGetter          interface{ GetLegs() []*bankv1.Leg }
)

// logInterceptor writes one line per call when it ends. It implements connect.Interceptor.
type logInterceptor struct {
	log *slog.Logger
	// quiet procedures log successful calls at DEBUG: health checks come every few seconds.
	quiet map[string]bool
}

func (l *logInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		start := time.Now()
		ctx, ci := NewCallContext(ctx)
		res, err := next(ctx, req)
		l.emit(ctx, callRecord{
			procedure: req.Spec().Procedure,
			peer:      req.Peer().Addr,
			header:    req.Header(),
			msg:       req.Any(),
			info:      ci,
			err:       err,
			duration:  time.Since(start),
		})
		return res, err
	}
}

func (l *logInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (l *logInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		ctx, ci := NewCallContext(ctx)
		rc := &recordingConn{StreamingHandlerConn: conn}
		err := next(ctx, rc)
		l.emit(ctx, callRecord{
			procedure: conn.Spec().Procedure,
			peer:      conn.Peer().Addr,
			header:    conn.RequestHeader(),
			msg:       rc.firstMessage(),
			info:      ci,
			err:       err,
			duration:  time.Since(start),
		})
		return err
	}
}

// recordingConn remembers the first message a streaming handler received, for the log line.
type recordingConn struct {
	connect.StreamingHandlerConn
	mu    sync.Mutex
	first any
}

func (c *recordingConn) Receive(msg any) error {
	err := c.StreamingHandlerConn.Receive(msg)
	if err == nil {
		c.mu.Lock()
		if c.first == nil {
			c.first = msg
		}
		c.mu.Unlock()
	}
	return err
}

func (c *recordingConn) firstMessage() any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first
}

type callRecord struct {
	procedure string
	peer      string
	header    http.Header
	msg       any
	info      *CallInfo
	err       error
	duration  time.Duration
}

func (l *logInterceptor) emit(ctx context.Context, r callRecord) {
	code, level := "ok", slog.LevelInfo
	if r.err != nil {
		c := connect.CodeOf(r.err)
		code, level = c.String(), levelOf(c)
	} else if l.quiet[r.procedure] {
		level = slog.LevelDebug
	}
	if !l.log.Enabled(ctx, level) {
		return
	}

	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs, slog.String("procedure", r.procedure), slog.String("peer", r.peer))
	if p, ok := identity.PeerFrom(ctx); ok {
		if id := p.Identity.String(); id != "" {
			attrs = append(attrs, slog.String("identity", id))
		} else {
			attrs = append(attrs, slog.String("identity", "unknown"), slog.String("fingerprint", p.Fingerprint))
		}
	}
	user := r.info.User()
	if g, ok := r.msg.(usernameGetter); ok && user == "" {
		user = g.GetUsername()
	}
	if user != "" {
		attrs = append(attrs, slog.String("user", user))
	}
	attrs = appendMessageAttrs(attrs, r.msg)
	if n, err := strconv.Atoi(r.header.Get(AttemptHeader)); err == nil && n > 0 {
		attrs = append(attrs, slog.Int("attempt", n))
		if n > 1 {
			attrs = append(attrs, slog.Bool("retry", true))
		}
	}
	attrs = append(attrs, slog.String("code", code))
	if r.err != nil {
		attrs = append(attrs, slog.String("error", errorMessage(r.err)))
	}
	attrs = append(attrs, slog.Duration("duration", r.duration))
	attrs = append(attrs, r.info.Attrs()...)
	l.log.LogAttrs(ctx, level, LogMessage, attrs...)
}

// appendMessageAttrs adds the loggable fields of a request message.
// maxLoggedField bounds a request field copied into a log line. The line is written before
// validation, so a field may be as long as the message size limit allows; valid ids and codes
// are at most 64 bytes.
const maxLoggedField = 64

// clip shortens s to maxLoggedField bytes, saying how long it was.
func clip(s string) string {
	if len(s) <= maxLoggedField {
		return s
	}
	return strings.ToValidUTF8(s[:maxLoggedField], "") + fmt.Sprintf("...(%d bytes)", len(s))
}

func appendMessageAttrs(attrs []slog.Attr, msg any) []slog.Attr {
	if msg == nil {
		return attrs
	}
	if g, ok := msg.(paymentIDGetter); ok && g.GetPaymentId() != "" {
		attrs = append(attrs, slog.String("payment_id", clip(g.GetPaymentId())))
	}
	if g, ok := msg.(transactionIDGetter); ok && g.GetTransactionId() != "" {
		attrs = append(attrs, slog.String("transaction_id", clip(g.GetTransactionId())))
	}
	amount, currency := int64(0), ""
	if g, ok := msg.(amountGetter); ok {
		amount = g.GetAmount()
	}
	if g, ok := msg.(currencyGetter); ok {
		currency = g.GetCurrency()
	}
	if g, ok := msg.(legsGetter); ok && amount == 0 {
		if legs := g.GetLegs(); len(legs) > 0 {
			amount, currency = legs[0].GetAmount(), legs[0].GetCurrency()
		}
	}
	if amount != 0 {
		attrs = append(attrs, slog.Int64("amount", amount))
	}
	if currency != "" {
		attrs = append(attrs, slog.String("currency", clip(currency)))
	}
	return attrs
}

// levelOf is the level of a failed call: ERROR when the server is at fault, WARN otherwise.
func levelOf(c connect.Code) slog.Level {
	switch c {
	case connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss:
		return slog.LevelError
	}
	return slog.LevelWarn
}

func errorMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}
