package rpcserver

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

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
)

// logInterceptor writes one line per call when it ends. It implements connect.Interceptor. It
// also gives every call its request id (see RequestIDHeader): it puts the id into the call's
// context (RequestIDFrom) and into the response's header before the call runs, so that the id is
// sent whatever the outcome.
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
		id, needsHeader := callRequestID(ctx, req.Header())
		ctx = WithRequestID(ctx, id)
		if info, ok := connect.CallInfoForHandlerContext(ctx); ok && needsHeader {
			info.ResponseHeader().Set(RequestIDHeader, id) // sent on success and on error
		}
		res, err := next(ctx, req)
		l.emit(ctx, callRecord{
			procedure: req.Spec().Procedure,
			requestID: id,
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
		id, needsHeader := callRequestID(ctx, conn.RequestHeader())
		ctx = WithRequestID(ctx, id)
		if needsHeader {
			conn.ResponseHeader().Set(RequestIDHeader, id) // sent with the first message or the error
		}
		rc := &recordingConn{StreamingHandlerConn: conn}
		err := next(ctx, rc)
		l.emit(ctx, callRecord{
			procedure: conn.Spec().Procedure,
			requestID: id,
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
	requestID string
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
	attrs = append(attrs, slog.String("procedure", clip(r.procedure)), slog.String("peer", clip(r.peer)),
		slog.String("request_id", r.requestID)) // well formed: at most 64 bytes
	if p, ok := identity.PeerFrom(ctx); ok {
		if id := p.Identity.String(); id != "" {
			attrs = append(attrs, slog.String("identity", clip(id)))
		} else {
			attrs = append(attrs, slog.String("identity", "unknown"), slog.String("fingerprint", clip(p.Fingerprint)))
		}
	}
	user := r.info.User() // clipped by SetUser
	if g, ok := r.msg.(usernameGetter); ok && user == "" {
		user = clip(g.GetUsername())
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
		attrs = append(attrs, slog.String("error", clipTo(errorMessage(r.err), maxLoggedMessage)))
	}
	attrs = append(attrs, slog.Duration("duration", r.duration))
	if sc := trace.SpanFromContext(ctx); sc.IsRecording() {
		attrs = append(attrs, slog.String("trace_id", sc.SpanContext().TraceID().String()))
	}
	attrs = append(attrs, r.info.Attrs()...) // clipped by Add
	l.log.LogAttrs(ctx, level, LogMessage, attrs...)
}

// Bounds of the strings copied into a log line. A request is logged before it is validated and
// whatever the outcome, so any of its fields (and a username that names nobody) may be as long
// as the message size limit allows; valid ids, usernames and codes are at most 64 bytes.
const (
	// maxLoggedField bounds identifiers: ids, usernames, peer and certificate names, and the
	// keys and string values of attributes added by handlers.
	maxLoggedField = 128
	// maxLoggedMessage bounds error messages.
	maxLoggedMessage = 512
)

// clip shortens s to maxLoggedField bytes; see clipTo.
func clip(s string) string { return clipTo(s, maxLoggedField) }

// clipTo shortens s to at most n bytes, cut on a UTF-8 boundary, and says how many bytes were
// cut: "abc…(+1048573 bytes)".
func clipTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for i := 0; i < utf8.UTFMax-1 && cut > 0 && !utf8.RuneStart(s[cut]); i++ {
		cut--
	}
	return s[:cut] + "…(+" + strconv.Itoa(len(s)-cut) + " bytes)"
}

// clipAttr clips the strings of a: its key and string values (as identifiers), recursively in
// groups, and other values whose text is longer than a message (logged as their clipped text).
func clipAttr(a slog.Attr) slog.Attr {
	a.Key = clip(a.Key)
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(clip(v.String()))
	case slog.KindGroup:
		group := v.Group()
		clipped := make([]slog.Attr, len(group))
		for i, g := range group {
			clipped[i] = clipAttr(g)
		}
		a.Value = slog.GroupValue(clipped...)
	case slog.KindAny:
		if s := v.String(); len(s) > maxLoggedMessage {
			a.Value = slog.StringValue(clipTo(s, maxLoggedMessage))
		} else {
			a.Value = v
		}
	default:
		a.Value = v
	}
	return a
}

// appendMessageAttrs adds the loggable fields of a request message, clipped.
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
	if amount == 0 {
		if a, c, ok := firstLeg(msg); ok {
			amount, currency = a, c
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

// firstLeg returns the amount and currency of the first element of msg's repeated "legs" field
// (a bank's prepare), found by reflection so that this package depends on no service's API.
func firstLeg(msg any) (amount int64, currency string, ok bool) {
	m, isProto := msg.(proto.Message)
	if !isProto || m == nil {
		return 0, "", false
	}
	r := m.ProtoReflect()
	if !r.IsValid() {
		return 0, "", false
	}
	fd := r.Descriptor().Fields().ByName("legs")
	if fd == nil || !fd.IsList() || fd.Message() == nil {
		return 0, "", false
	}
	legs := r.Get(fd).List()
	if legs.Len() == 0 {
		return 0, "", false
	}
	leg := legs.Get(0).Message()
	fields := leg.Descriptor().Fields()
	if f := fields.ByName("amount"); f != nil && f.Kind() == protoreflect.Int64Kind && !f.IsList() {
		amount = leg.Get(f).Int()
	}
	if f := fields.ByName("currency"); f != nil && f.Kind() == protoreflect.StringKind && !f.IsList() {
		currency = leg.Get(f).String()
	}
	return amount, currency, true
}
