package metrics

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// rulesDir holds the alerting rules shipped for Prometheus and their unit tests.
const rulesDir = "../../deploy/prometheus"

// TestAlertingRules checks deploy/prometheus/paygate-rules.yml with `promtool check rules` and
// runs its unit tests (paygate-rules_test.yml) with `promtool test rules`. That every paygate
// metric the rules use is exposed is checked against real scrapes by TestMetricsEndToEnd.
func TestAlertingRules(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not on PATH (scripts/tools.sh installs Debian's prometheus package): the alerting rules are not checked")
	}
	for _, args := range [][]string{
		{"check", "rules", filepath.Join(rulesDir, "paygate-rules.yml")},
		{"test", "rules", filepath.Join(rulesDir, "paygate-rules_test.yml")},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
