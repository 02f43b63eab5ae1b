package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
)

// ErrBankUnavailable reports a bank that the health monitor knows to be down.
var ErrBankUnavailable = errors.New("gateway: bank unavailable")

// bankHealth tracks whether each bank answers. A probe loop checks every bank's grpc.health.v1
// service on an interval; failed calls to a bank mark it down at once. While a bank is down,
// calls that need it fail fast instead of waiting for a timeout.
type bankHealth struct {
	logger   *slog.Logger
	onChange func(bank string, up bool)
	// failuresToDown is how many consecutive failed probes mark a bank down.
	failuresToDown int

	mu    sync.Mutex
	state map[string]*bankState

	// pubMu orders publications: onChange is called under it, with the state as it is at the
	// time of the call, so the last state published is always the current one.
	pubMu     sync.Mutex
	published map[string]bool
}

type bankState struct {
	up       bool
	failures int
	lastErr  error
	since    time.Time
}

func newBankHealth(banks []string, logger *slog.Logger, onChange func(string, bool)) *bankHealth {
	h := &bankHealth{logger: logger, onChange: onChange, failuresToDown: 2, state: make(map[string]*bankState),
		published: make(map[string]bool)}
	for _, b := range banks {
		// Banks start as up: the first probe or call corrects it within one interval.
		h.state[b] = &bankState{up: true, since: time.Now()}
		h.published[b] = true
	}
	return h
}

// check returns an error naming the bank when it is known to be down.
func (h *bankHealth) check(bank string) error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st, ok := h.state[bank]
	if !ok || st.up {
		return nil
	}
	return fmt.Errorf("%w: %s is not answering (since %s: %v)", ErrBankUnavailable, bank,
		st.since.UTC().Format(time.RFC3339), st.lastErr)
}

// status says whether bank is up, by the health monitor, and since when it is in that state.
// A bank the monitor does not know is reported up.
func (h *bankHealth) status(bank string) (up bool, since time.Time) {
	if h == nil {
		return true, time.Time{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st, ok := h.state[bank]
	if !ok {
		return true, time.Time{}
	}
	return st.up, st.since
}

// observe records the result of a probe or a call to bank. Only transport failures count
// against a bank; an application error means it answered.
func (h *bankHealth) observe(bank string, err error, fromProbe bool) {
	if h == nil {
		return
	}
	failed := err != nil && isTransportFailure(err)
	h.mu.Lock()
	st, ok := h.state[bank]
	if !ok {
		h.mu.Unlock()
		return
	}
	changed := false
	switch {
	case !failed:
		st.failures = 0
		if !st.up {
			st.up, st.since, changed = true, time.Now(), true
		}
	default:
		st.failures++
		st.lastErr = err
		// A refused connection is certain; slowness needs repeated failed probes (a slow call
		// may be the caller's own deadline).
		if st.up && (connect.CodeOf(err) == connect.CodeUnavailable || (fromProbe && st.failures >= h.failuresToDown)) {
			st.up, st.since, changed = false, time.Now(), true
		}
	}
	h.mu.Unlock()
	if changed {
		h.publish(bank)
	}
}

// publish logs and reports bank's state as it is now, unless that is what was published last.
// Concurrent changes may each call it in any order: whichever runs last reads the latest state,
// so the published state never stays behind the internal one.
func (h *bankHealth) publish(bank string) {
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	h.mu.Lock()
	st := h.state[bank]
	up, lastErr := st.up, st.lastErr
	h.mu.Unlock()
	if h.published[bank] == up {
		return
	}
	h.published[bank] = up
	level := slog.LevelInfo
	attrs := []slog.Attr{slog.String("bank", bank), slog.Bool("up", up)}
	if !up {
		level = slog.LevelWarn
		if lastErr != nil {
			attrs = append(attrs, slog.String("error", lastErr.Error()))
		}
	}
	h.logger.LogAttrs(context.Background(), level, "bank health changed", attrs...)
	if h.onChange != nil {
		h.onChange(bank, up)
	}
}

func isTransportFailure(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeUnknown, connect.CodeCanceled:
		return true
	}
	return false
}

// probe checks every bank every interval until ctx ends.
func (h *bankHealth) probe(ctx context.Context, clients map[string]*grpchealth.Client, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		for bank, client := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// A probe may take longer than the interval: a short interval must not turn a
				// slow but healthy bank into a down one.
				cctx, cancel := context.WithTimeout(ctx, max(interval, 2*time.Second))
				defer cancel()
				resp, err := client.Check(cctx, &grpchealth.CheckRequest{})
				if err == nil && resp.Status != grpchealth.StatusServing {
					err = connect.NewError(connect.CodeUnavailable, fmt.Errorf("health status %s", resp.Status))
				}
				if ctx.Err() != nil {
					return
				}
				h.observe(bank, err, true)
			}()
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
