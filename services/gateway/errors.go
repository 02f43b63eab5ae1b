package gateway

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	"github.com/paygate/paygate/internal/rpcerr"
)

// errorCodes maps the gateway's domain errors to Connect codes and stable reasons at the RPC
// boundary, for those that reach it without a handler having said more (handlers answer most of
// them with messages naming the payment or the account). The first entry that matches wins.
// Errors not in the table go on to the server's error boundary (rpcserver): context errors
// become CANCELED or DEADLINE_EXCEEDED, storage failures UNAVAILABLE "storage_unavailable",
// anything else INTERNAL "internal", logged in full and answered without its text.
var errorCodes = []struct {
	err    error
	code   connect.Code
	reason string
	msg    string
}{
	{ErrPaymentReused, connect.CodeAlreadyExists, "payment_id_reused", "payment_id was already used for a payment with different parameters"},
	{ErrPaymentInProgress, connect.CodeAborted, "payment_in_progress", "the payment is still in progress; retry with the same payment_id"},
	{ErrNotParticipant, connect.CodePermissionDenied, "not_a_participant", "transaction_id: the bank cannot show the transaction was sent to it"},
	{ErrUserExists, connect.CodeAlreadyExists, "username_taken", "username is taken"},
	{ErrTooManySessions, connect.CodeResourceExhausted, "too_many_sessions", "this user has too many live sessions: log out of one and log in again"},
	{ErrUnknownBank, connect.CodeNotFound, "unknown_bank", "no such bank"},
	{errNULText, connect.CodeInvalidArgument, "invalid_text", "text must be valid UTF-8 without NUL bytes"},
}

// mapError is the gateway's rpcserver.ErrorMapper.
func mapError(_ context.Context, err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	for _, e := range errorCodes {
		if errors.Is(err, e.err) {
			return rpcerr.New(e.code, e.reason, e.msg)
		}
	}
	return err
}
