package bench

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Kind is a kind of payment the bench sends.
type Kind int

// The kinds of payment.
const (
	// Cross is a payment between accounts at two banks: ExecutePayment, then a prepare and a
	// commit at each bank.
	Cross Kind = iota
	// Same is a payment between two accounts of one bank: one prepare and one commit.
	Same
	// Fail is a payment that the banks decline: an amount above the payer's balance or an
	// unknown payee, between two banks (two prepares, two aborts).
	Fail
	numKinds
)

var kindNames = [numKinds]string{"cross", "same", "fail"}

func (k Kind) String() string {
	if k < 0 || k >= numKinds {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindNames[k]
}

// RPCs returns how many RPCs one payment of kind k takes: the client's ExecutePayment plus the
// gateway's calls to the banks.
func (k Kind) RPCs() int {
	switch k {
	case Same:
		return 1 + 1 + 1 // Execute, one prepare with both legs, one commit
	default:
		return 1 + 2 + 2 // Execute, two prepares, two commits (or aborts)
	}
}

// Mix is the relative weight of each kind of payment.
type Mix [numKinds]int

// DefaultMix is 80% cross-bank, 10% same-bank and 10% failing payments.
var DefaultMix = Mix{Cross: 80, Same: 10, Fail: 10}

// ParseMix parses "cross=80,same=10,fail=10". Kinds left out weigh 0; weights are non-negative
// integers and at least one is positive. They need not add up to 100.
func ParseMix(s string) (Mix, error) {
	var m Mix
	seen := map[string]bool{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		if !ok {
			return m, fmt.Errorf("mix: %q: want KIND=WEIGHT", part)
		}
		k := Kind(-1)
		for i, n := range kindNames {
			if n == name {
				k = Kind(i)
			}
		}
		if k < 0 {
			return m, fmt.Errorf("mix: unknown kind %q (want cross, same or fail)", name)
		}
		if seen[name] {
			return m, fmt.Errorf("mix: %s given twice", name)
		}
		seen[name] = true
		w, err := strconv.Atoi(strings.TrimSpace(val))
		if err != nil || w < 0 || w > 1_000_000 {
			return m, fmt.Errorf("mix: %s=%s: want a whole number from 0 to 1000000", name, val)
		}
		m[k] = w
	}
	if m.total() == 0 {
		return m, fmt.Errorf("mix: %q: at least one weight must be positive", s)
	}
	return m, nil
}

func (m Mix) total() int {
	t := 0
	for _, w := range m {
		t += w
	}
	return t
}

// String formats m as ParseMix reads it.
func (m Mix) String() string {
	parts := make([]string, 0, numKinds)
	for k, w := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", Kind(k), w))
	}
	return strings.Join(parts, ",")
}

// pick draws a kind with probability proportional to its weight.
func (m Mix) pick(r *rand.Rand) Kind {
	n := r.IntN(m.total())
	for k, w := range m {
		if n < w {
			return Kind(k)
		}
		n -= w
	}
	return Cross
}

// RPCsPerPayment is the mean number of RPCs per payment of the mix.
func (m Mix) RPCsPerPayment() float64 {
	var rpcs float64
	for k, w := range m {
		rpcs += float64(w * Kind(k).RPCs())
	}
	return rpcs / float64(m.total())
}
