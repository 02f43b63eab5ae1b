// Package rpcerr builds Connect errors that carry a machine-readable reason.
//
// Every error a paygate service returns on purpose has a google.rpc.ErrorInfo detail with the
// domain "paygate" and a snake_case reason ("insufficient_funds", "payment_id_reused"), so that
// programs branch on the reason and people read the message.
package rpcerr

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
)

// Domain is the ErrorInfo domain of paygate's errors.
const Domain = "paygate"

// New returns a Connect error with code, a message built from format and args, and an ErrorInfo
// detail with reason. Metadata pairs (key, value, key, value...) are added to the detail.
func New(code connect.Code, reason string, msg string, metadata ...string) *connect.Error {
	err := connect.NewError(code, errors.New(msg))
	info := &errdetails.ErrorInfo{Reason: reason, Domain: Domain}
	if len(metadata) > 0 {
		info.Metadata = make(map[string]string, len(metadata)/2)
		for i := 0; i+1 < len(metadata); i += 2 {
			info.Metadata[metadata[i]] = metadata[i+1]
		}
	}
	if d, derr := connect.NewErrorDetail(info); derr == nil {
		err.AddDetail(d)
	}
	return err
}

// Newf is New with a formatted message.
func Newf(code connect.Code, reason string, format string, args ...any) *connect.Error {
	return New(code, reason, fmt.Sprintf(format, args...))
}

// Reason returns the ErrorInfo reason of err, or "" when it has none.
func Reason(err error) string {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return ""
	}
	for _, d := range ce.Details() {
		v, verr := d.Value()
		if verr != nil {
			continue
		}
		if info, ok := v.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return info.GetReason()
		}
	}
	return ""
}
