package crashpoint

import (
	"context"
	"slices"
	"testing"
)

func TestAllNamesDistinct(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, name := range All {
		if seen[name] {
			t.Errorf("%s listed twice", name)
		}
		seen[name] = true
	}
	for _, name := range []string{GatewayAfterInsert, GatewayVotesBeforeAdmit} {
		if !slices.Contains(All, name) {
			t.Errorf("%s missing from All", name)
		}
	}
}

// An unconfigured point does nothing: Hold returns the context it was given and Held does not
// wait, in every build.
func TestUnconfiguredPointsDoNothing(t *testing.T) {
	ctx := context.Background()
	if got := Hold(ctx, "test.not_configured"); got != ctx {
		t.Error("Hold marked a context for a point that is not configured")
	}
	Held(ctx)
	HitHeld(ctx, "test.not_configured")
	Hit("test.not_configured")
}
