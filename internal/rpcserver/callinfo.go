package rpcserver

import (
	"context"
	"log/slog"
	"sync"
)

// CallInfo is the per-call record that the logging interceptor turns into one log line. Inner
// layers fill it: the policy interceptor sets the user of AccessUser calls, and handlers add what
// only they know (for example slog.Bool("replayed", true)). It is safe for concurrent use, and
// its methods do nothing on a nil *CallInfo, so handlers called outside a Server need no checks.
type CallInfo struct {
	mu    sync.Mutex
	user  string
	attrs []slog.Attr
}

type callInfoKey struct{}

// NewCallContext returns a context carrying a fresh CallInfo, and the CallInfo. The logging
// interceptor calls it for every call; tests of handlers may call it to inspect what a handler
// recorded.
func NewCallContext(ctx context.Context) (context.Context, *CallInfo) {
	ci := &CallInfo{}
	return context.WithValue(ctx, callInfoKey{}, ci), ci
}

// CallInfoFrom returns the CallInfo of the call ctx belongs to, or nil outside a call.
func CallInfoFrom(ctx context.Context) *CallInfo {
	ci, _ := ctx.Value(callInfoKey{}).(*CallInfo)
	return ci
}

// SetUser records the name of the user making the call, clipped to a length fit for a log line
// (the name may come from the request, before it is validated).
func (c *CallInfo) SetUser(name string) {
	if c == nil {
		return
	}
	name = clip(name)
	c.mu.Lock()
	c.user = name
	c.mu.Unlock()
}

// User returns the name recorded by SetUser.
func (c *CallInfo) User() string {
	if c == nil {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user
}

// Add records attributes for the call's log line, their strings clipped to a length fit for a
// log line. Never add secrets.
func (c *CallInfo) Add(attrs ...slog.Attr) {
	if c == nil {
		return
	}
	clipped := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clipped[i] = clipAttr(a)
	}
	c.mu.Lock()
	c.attrs = append(c.attrs, clipped...)
	c.mu.Unlock()
}

// Attrs returns a copy of the attributes recorded by Add.
func (c *CallInfo) Attrs() []slog.Attr {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]slog.Attr(nil), c.attrs...)
}
