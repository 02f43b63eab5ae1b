package gateway

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// RefundPayment implements PaymentService.
func (g *Gateway) RefundPayment(ctx context.Context, req *connect.Request[gatewayv1.RefundPaymentRequest]) (*connect.Response[gatewayv1.RefundPaymentResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("refunds are not available yet"))
}
