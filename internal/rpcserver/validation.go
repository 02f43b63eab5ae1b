package rpcserver

import (
	"context"
	"errors"
	"strings"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/paygate/paygate/internal/rpcerr"
)

// ReasonInvalidArgument is the ErrorInfo reason of a request that failed validation.
const ReasonInvalidArgument = "invalid_argument"

// reasonInterceptor gives validation errors (protovalidate's InvalidArgument, which carry
// buf.validate.Violations) the ErrorInfo detail every paygate error has, with reason
// "invalid_argument" and the offending fields in metadata "fields". It sits outside the
// validation interceptor.
type reasonInterceptor struct{}

func (reasonInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		return resp, addValidationReason(err)
	}
}

func (reasonInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (reasonInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return addValidationReason(next(ctx, conn))
	}
}

func addValidationReason(err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument || rpcerr.Reason(err) != "" {
		return err
	}
	var fields []string
	for _, d := range ce.Details() {
		v, verr := d.Value()
		if verr != nil {
			continue
		}
		if vs, ok := v.(*validate.Violations); ok {
			for _, viol := range vs.GetViolations() {
				if f := protovalidate.FieldPathString(viol.GetField()); f != "" {
					fields = append(fields, f)
				}
			}
		}
	}
	info := &errdetails.ErrorInfo{Reason: ReasonInvalidArgument, Domain: rpcerr.Domain}
	if len(fields) > 0 {
		info.Metadata = map[string]string{"fields": strings.Join(fields, ",")}
	}
	if d, derr := connect.NewErrorDetail(info); derr == nil {
		ce.AddDetail(d)
	}
	return err
}
