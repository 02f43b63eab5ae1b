package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/paygate/paygate/internal/cluster"
)

// callLine is the line --verbose prints for each call the client made.
var callLine = regexp.MustCompile(`(?m)\bcall procedure=(\S+) .*code=(\S+) request_id=(\S+)`)

// TestCLIVerbosePrintsRequestIDs: with --verbose every call's line names the request id the
// gateway answered with, the id its own log line of the call carries; a command that fails prints
// the same id on its "request id:" line.
func TestCLIVerbosePrintsRequestIDs(t *testing.T) {
	t.Parallel()
	c := cluster.New(t, cluster.Options{})
	alice := newCLIUser(t, c)
	alice.login("alice")

	_, errOut, code := alice.run("balance", "--verbose")
	if code != 0 {
		t.Fatalf("balance --verbose: exit %d\n%s", code, errOut)
	}
	m := callLine.FindStringSubmatch(errOut)
	if m == nil {
		t.Fatalf("balance --verbose printed no call line with a request id:\n%s", errOut)
	}
	if m[1] != "/paygate.gateway.v1.BalanceService/FetchBalance" || m[2] != "ok" {
		t.Errorf("call line: procedure %s, code %s; want FetchBalance, ok", m[1], m[2])
	}
	if lines := c.GrepLog("gateway", `"request_id":"`+m[3]+`"`, "FetchBalance"); len(lines) != 1 {
		t.Errorf("gateway log lines with request_id %s: %d, want 1", m[3], len(lines))
	}

	// alice is no admin: the refusal's request id is printed twice, by the call line and by
	// the error, and the gateway logged the call with it.
	_, errOut, code = alice.run("admin", "users", "list", "--verbose")
	if code == 0 {
		t.Fatalf("admin users list as alice: exit 0\n%s", errOut)
	}
	var refused []string
	for _, m := range callLine.FindAllStringSubmatch(errOut, -1) {
		if m[1] == "/paygate.gateway.v1.AdminService/ListUsers" && m[2] == "permission_denied" {
			refused = append(refused, m[3])
		}
	}
	printed := regexp.MustCompile(`(?m)^request id: (\S+)$`).FindStringSubmatch(errOut)
	if len(refused) != 1 || printed == nil || printed[1] != refused[0] {
		t.Fatalf("refused call: call lines' ids %v, printed id %v; want one id, the same\n%s", refused, printed, errOut)
	}
	if lines := c.GrepLog("gateway", `"request_id":"`+refused[0]+`"`, "ListUsers"); len(lines) != 1 || !strings.Contains(lines[0], "permission_denied") {
		t.Errorf("gateway log lines with request_id %s: %q, want one, permission_denied", refused[0], lines)
	}
}
