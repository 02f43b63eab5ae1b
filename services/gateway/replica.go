package gateway

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// What a gateway replica does beside its requests when it shares its store with others (see
// leaseStore): it keeps its lease alive, hears of payments other replicas changed, and hands
// its payments back when it stops.

// keepLease renews the store lease every quarter of its lifetime until ctx ends. A renewal
// that finds the lease expired (this process was paused, or cut off from the store, for
// longer than the lease lasts) is logged: the store has given the process a new lease, its
// drivers of payments held under the old one stop before their next prepare (see
// Coordinator.holds), and recovery claims back whatever no other replica took.
func (c *Coordinator) keepLease(ctx context.Context) {
	ttl := c.store.LeaseTTL()
	if ttl <= 0 {
		return
	}
	t := time.NewTicker(ttl / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := c.store.RenewLease(ctx)
		switch {
		case errors.Is(err, ErrLeaseLost):
			c.logger.LogAttrs(ctx, slog.LevelError, "lease expired before it was renewed: other replicas may have taken over this replica's payments",
				slog.Duration("lease_ttl", ttl), slog.String("new_lease", c.store.Owner()))
			c.forgetHeld("")
			c.Kick()
		case err != nil && ctx.Err() == nil:
			c.logger.LogAttrs(ctx, slog.LevelWarn, "renew lease", slog.String("error", err.Error()))
		}
	}
}

// listen tells this process's waiters of payments other replicas decided, until ctx ends.
// Nothing is read while nobody waits. (Payment streams follow the event log instead.)
func (c *Coordinator) listen(ctx context.Context) {
	if !c.store.Shared() {
		return
	}
	err := c.store.Listen(ctx, func(id string) {
		if c.events.idle() {
			return
		}
		p, err := c.store.Payment(ctx, id)
		if err != nil {
			if ctx.Err() == nil {
				c.logger.LogAttrs(ctx, slog.LevelWarn, "read a payment another replica changed", slog.String("payment_id", id), slog.String("error", err.Error()))
			}
			return
		}
		c.events.publish(p)
	})
	if err != nil && ctx.Err() == nil {
		c.logger.LogAttrs(ctx, slog.LevelWarn, "listen for other replicas' payments", slog.String("error", err.Error()))
	}
}

// handBack ends this process's lease, so that other replicas take its unfinished payments over
// at once instead of after the lease expires. Call it once nothing drives payments here.
func (c *Coordinator) handBack(ctx context.Context) error {
	if !c.store.Shared() {
		return nil
	}
	if err := c.store.ReleaseLease(ctx); err != nil {
		return err
	}
	c.logger.LogAttrs(ctx, slog.LevelInfo, "handed this replica's unfinished payments back to the other replicas")
	return nil
}
