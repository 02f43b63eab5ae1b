package rpcserver

import (
	"context"
	"errors"
	"net/http"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"

	"github.com/paygate/paygate/internal/rpcerr"
)

// RequestIDHeader carries a call's request id. Every response of a Server carries it, on success
// and on error; a caller may send its own, which is kept when it is well formed (see
// ValidRequestID) and replaced by a new one otherwise. The id is also in the call's log line
// (attribute "request_id") and in the metadata "request_id" of an error's ErrorInfo.
const RequestIDHeader = "Paygate-Request-Id"

// RequestIDMetadataKey is the ErrorInfo metadata key of the request id of a failed call.
const RequestIDMetadataKey = "request_id"

// maxRequestIDLen is the length limit of a request id a caller sends.
const maxRequestIDLen = 64

// ValidRequestID reports whether id is a well-formed request id: 1 to 64 characters of
// A-Z, a-z, 0-9, '.', '_', ':' and '-'.
func ValidRequestID(id string) bool {
	if len(id) == 0 || len(id) > maxRequestIDLen {
		return false
	}
	for i := range len(id) {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// NewRequestID returns a new request id: a UUIDv7, so that ids sort by time.
func NewRequestID() string {
	if id, err := uuid.NewV7(); err == nil {
		return id.String()
	}
	return uuid.NewString()
}

// requestIDOf is the id of a call whose request header carried sent: sent when it is well
// formed, a new id otherwise.
func requestIDOf(sent string) string {
	if ValidRequestID(sent) {
		return sent
	}
	return NewRequestID()
}

type requestIDKey struct{}

// requestIDValue is what a call's context holds of its request id: the id, and whether the
// response's header already carries it (RequestIDMiddleware set it).
type requestIDValue struct {
	id       string
	answered bool
}

// WithRequestID returns a context carrying the request id id. The logging interceptor calls it
// for every call; outgoing calls made with the context forward the id (see ClientOptions).
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, requestIDValue{id: id})
}

// RequestIDFrom returns the request id of the call ctx belongs to, or "" outside a call.
func RequestIDFrom(ctx context.Context) string {
	v, _ := ctx.Value(requestIDKey{}).(requestIDValue)
	return v.id
}

// RequestIDMiddleware gives every request h serves a request id, as the logging interceptor
// does for RPCs, and sets it in the response's header before h runs, so that answers that no
// interceptor sees (a static file, a path nothing serves, a request the RPC framework refuses
// before the interceptors) carry it too. RPCs served inside it keep the same id.
func RequestIDMiddleware(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := requestIDOf(r.Header.Get(RequestIDHeader))
		w.Header().Set(RequestIDHeader, id)
		ctx := context.WithValue(r.Context(), requestIDKey{}, requestIDValue{id: id, answered: true})
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// callRequestID returns the request id of a call whose request header is h, and whether the
// response's header still needs it: the id RequestIDMiddleware gave the request, or else the
// header's when well formed, or a new one.
func callRequestID(ctx context.Context, h http.Header) (id string, needsHeader bool) {
	if v, ok := ctx.Value(requestIDKey{}).(requestIDValue); ok && v.answered {
		return v.id, false
	}
	return requestIDOf(h.Get(RequestIDHeader)), true
}

// withRequestID returns err with id in the metadata of its paygate ErrorInfo (RequestIDMetadataKey),
// the code, message, other details and metadata kept. err is returned unchanged when it is not
// a Connect error with a paygate ErrorInfo, or when id is empty.
func withRequestID(err error, id string) error {
	var ce *connect.Error
	if id == "" || !errors.As(err, &ce) {
		return err
	}
	out := connect.NewError(ce.Code(), errors.New(ce.Message()))
	found := false
	for _, d := range ce.Details() {
		v, verr := d.Value()
		info, ok := v.(*errdetails.ErrorInfo)
		if verr != nil || !ok || info.GetDomain() != rpcerr.Domain || found {
			out.AddDetail(d)
			continue
		}
		info = proto.Clone(info).(*errdetails.ErrorInfo)
		if info.Metadata == nil {
			info.Metadata = make(map[string]string, 1)
		}
		info.Metadata[RequestIDMetadataKey] = id
		nd, nerr := connect.NewErrorDetail(info)
		if nerr != nil {
			out.AddDetail(d)
			continue
		}
		out.AddDetail(nd)
		found = true
	}
	if !found {
		return err
	}
	// The error's own metadata (headers and trailers) is not copied: no paygate server sets any,
	// and reading it (Error.Meta) writes to the error, which races when the error is one of the
	// package-level values many calls return at once.
	return out
}

// requestIDClientInterceptor forwards the request id of the call an outgoing call is made in
// (RequestIDFrom) in the outgoing request's RequestIDHeader, unless the caller set one, so that
// the log lines of the servers a call reaches carry the id of the call that caused them.
type requestIDClientInterceptor struct{}

func (requestIDClientInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if id := RequestIDFrom(ctx); id != "" && req.Spec().IsClient && req.Header().Get(RequestIDHeader) == "" {
			req.Header().Set(RequestIDHeader, id)
		}
		return next(ctx, req)
	}
}

func (requestIDClientInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if id := RequestIDFrom(ctx); id != "" && conn.RequestHeader().Get(RequestIDHeader) == "" {
			conn.RequestHeader().Set(RequestIDHeader, id)
		}
		return conn
	}
}

func (requestIDClientInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
