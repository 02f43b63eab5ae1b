package rpcserver

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/internal/pgdb"
	"github.com/paygate/paygate/internal/rpcerr"
	"github.com/paygate/paygate/internal/sqlitedb"
)

// Reasons of the errors the boundary gives to failures that are not the caller's.
const (
	// ReasonInternal: a bug or an unexpected failure; the details are in the server's log.
	ReasonInternal = "internal"
	// ReasonStorageUnavailable: the server's store cannot be written or read now (a full disk,
	// an I/O error, shutdown); retry later.
	ReasonStorageUnavailable = "storage_unavailable"
	// ReasonCanceled and ReasonDeadlineExceeded: the call ended before its answer.
	ReasonCanceled         = "canceled"
	ReasonDeadlineExceeded = "deadline_exceeded"
)

// ErrorMapper is a service's table from its domain errors to the RPC's errors (see
// Config.MapError). It returns err unchanged for an error it does not know.
type ErrorMapper func(ctx context.Context, err error) error

// boundaryInterceptor is the error boundary of every server: whatever a handler (or the
// authenticator) returns, the caller gets a Connect error with a known code and an ErrorInfo
// reason, never UNKNOWN and never internal text. A service's own table (mapErr) runs first;
// then errors that are already paygate errors pass, context errors become CANCELED or
// DEADLINE_EXCEEDED, storage failures that may pass UNAVAILABLE "storage_unavailable", and
// anything else INTERNAL "internal". What the caller does not see is logged in full at ERROR.
// The error's ErrorInfo carries the call's request id in its metadata "request_id".
type boundaryInterceptor struct {
	log    *slog.Logger
	mapErr ErrorMapper
}

func (b *boundaryInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		if err != nil {
			return nil, withRequestID(b.boundary(ctx, req.Spec().Procedure, err), RequestIDFrom(ctx))
		}
		return resp, nil
	}
}

func (b *boundaryInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (b *boundaryInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := next(ctx, conn); err != nil {
			return withRequestID(b.boundary(ctx, conn.Spec().Procedure, err), RequestIDFrom(ctx))
		}
		return nil
	}
}

// boundary is the error the caller of procedure gets for err.
func (b *boundaryInterceptor) boundary(ctx context.Context, procedure string, err error) error {
	if b.mapErr != nil {
		err = b.mapErr(ctx, err)
	}
	var ce *connect.Error
	isConnect := errors.As(err, &ce)
	if isConnect && ce.Code() != connect.CodeUnknown && rpcerr.Reason(err) != "" {
		return err // a paygate error, made on purpose
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (isConnect && ce.Code() == connect.CodeDeadlineExceeded):
		return rpcerr.New(connect.CodeDeadlineExceeded, ReasonDeadlineExceeded, "the call's deadline passed before it was answered")
	case errors.Is(err, context.Canceled) || (isConnect && ce.Code() == connect.CodeCanceled):
		return rpcerr.New(connect.CodeCanceled, ReasonCanceled, "the call was canceled")
	case sqlitedb.Unavailable(err) || pgdb.Unavailable(err):
		b.log.ErrorContext(ctx, "storage unavailable", slog.String("procedure", procedure), slog.String("error", err.Error()))
		return rpcerr.New(connect.CodeUnavailable, ReasonStorageUnavailable, "the server's storage is unavailable; retry later")
	case isConnect && ce.Code() != connect.CodeUnknown && ce.Code() != connect.CodeInternal:
		// A Connect error without a reason, e.g. from the framework (a message too large):
		// its code and message are meant for the caller; give it the reason its code names.
		return rpcerr.New(ce.Code(), codeReason(ce.Code()), ce.Message())
	}
	b.log.ErrorContext(ctx, "internal error", slog.String("procedure", procedure), slog.String("error", err.Error()))
	return rpcerr.New(connect.CodeInternal, ReasonInternal, "internal error; the server logged it")
}

// codeReason is the reason of an error that only has a code: the code's name.
func codeReason(c connect.Code) string {
	return c.String() // "resource_exhausted", "unavailable", ...
}
