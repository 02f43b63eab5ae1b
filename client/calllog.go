package client

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/internal/rpcserver"
)

// callLogInterceptor logs every unary call the client makes at DEBUG: the procedure, how long
// it took, its code and the request id the gateway gave it (the Paygate-Request-Id header of
// the answer, or of the error), so that a user running with a logger (the CLI's --verbose) can
// quote the id to whoever runs the gateway. It is installed only when WithLogger is given.
type callLogInterceptor struct{ log *slog.Logger }

func (i callLogInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		resp, err := next(ctx, req)
		attrs := []slog.Attr{
			slog.String("procedure", req.Spec().Procedure),
			slog.Duration("duration", time.Since(start).Round(time.Microsecond)),
		}
		var id string
		if err != nil {
			id = RequestID(err)
			attrs = append(attrs, slog.String("code", connect.CodeOf(err).String()))
		} else {
			id = resp.Header().Get(rpcserver.RequestIDHeader)
			attrs = append(attrs, slog.String("code", "ok"))
		}
		if id != "" {
			attrs = append(attrs, slog.String("request_id", id))
		}
		i.log.LogAttrs(ctx, slog.LevelDebug, "call", attrs...)
		return resp, err
	}
}

func (i callLogInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i callLogInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
