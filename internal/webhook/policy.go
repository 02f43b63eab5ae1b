package webhook

import (
	"net/netip"
)

// An AddressPolicy decides whether the client may connect to an address: it returns nil to
// allow it, or an error (an *AddressError for DefaultPolicy) to refuse it. It is called with
// the actual IP of every connection, after DNS resolution, and with IP literals of URLs.
type AddressPolicy func(netip.Addr) error

// AddressError is an address that an AddressPolicy refuses. Its message names the class of the
// address ("address refused: loopback") and not the address itself: the delivery log is shown
// to the merchant who chose the URL, and must not tell what a name resolves to inside the
// operator's network. Addr is there for the operator's logs.
type AddressError struct {
	Addr  netip.Addr
	Class string
}

// Error returns "address refused: <class>".
func (e *AddressError) Error() string { return "address refused: " + e.Class }

// Reason returns ReasonAddressRefused.
func (e *AddressError) Reason() string { return ReasonAddressRefused }

// AllowAll is the policy of --webhook-allow-private: every address is allowed, loopback and
// private networks included. For development and tests only.
func AllowAll(netip.Addr) error { return nil }

// DefaultPolicy allows only publicly routable unicast addresses. It refuses, by class:
//
//   - loopback: 127.0.0.0/8, ::1
//   - private: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7 (unique local), fec0::/10
//     (the deprecated site-local)
//   - link-local: 169.254.0.0/16 (cloud metadata 169.254.169.254 among them, its own class),
//     fe80::/10
//   - unspecified: 0.0.0.0/8, ::
//   - multicast: 224.0.0.0/4, ff00::/8; broadcast: 255.255.255.255
//   - shared (CGNAT): 100.64.0.0/10; IETF protocol assignments: 192.0.0.0/24, 2001::/23 except
//     Teredo (below); benchmarking: 198.18.0.0/15, 2001:2::/48; documentation: 192.0.2.0/24,
//     198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32, 3fff::/20; 6to4 relay anycast:
//     192.88.99.0/24; reserved: 240.0.0.0/4; local-use NAT64: 64:ff9b:1::/48; discard-only:
//     100::/64
//   - every IPv6 address outside 2000::/3 (global unicast) that is none of the above, except
//     the forms of IPv4 below (reserved)
//   - an IPv4 address refused above in any IPv6 form: IPv4-mapped (::ffff:a.b.c.d),
//     IPv4-compatible (::a.b.c.d, deprecated: refused whatever it holds), NAT64
//     (64:ff9b::a.b.c.d), 6to4 (2002:aabb:ccdd::/48) and Teredo (2001::/32, server and client
//     addresses)
//   - an address with an IPv6 zone (scoped)
func DefaultPolicy(a netip.Addr) error {
	if class := classify(a); class != "" {
		return &AddressError{Addr: a, Class: class}
	}
	return nil
}

// prefixClass is a range of addresses that DefaultPolicy refuses, and its class.
type prefixClass struct {
	prefix netip.Prefix
	class  string
}

// Classes of refused addresses, as AddressError names them.
const (
	classLoopback      = "loopback"
	classPrivate       = "private"
	classLinkLocal     = "link-local"
	classMetadata      = "link-local (cloud metadata)"
	classUnspecified   = "unspecified"
	classMulticast     = "multicast"
	classBroadcast     = "broadcast"
	classShared        = "shared address space (CGNAT)"
	classIETF          = "IETF protocol assignment"
	classBenchmarking  = "benchmarking"
	classDocumentation = "documentation"
	classReserved      = "reserved"
	classScoped        = "scoped (IPv6 zone)"
	classInvalid       = "invalid"
)

// refused4 are the IPv4 ranges DefaultPolicy refuses, the most specific first.
var refused4 = []prefixClass{
	{netip.MustParsePrefix("169.254.169.254/32"), classMetadata},
	{netip.MustParsePrefix("255.255.255.255/32"), classBroadcast},
	{netip.MustParsePrefix("0.0.0.0/8"), classUnspecified},
	{netip.MustParsePrefix("10.0.0.0/8"), classPrivate},
	{netip.MustParsePrefix("100.64.0.0/10"), classShared},
	{netip.MustParsePrefix("127.0.0.0/8"), classLoopback},
	{netip.MustParsePrefix("169.254.0.0/16"), classLinkLocal},
	{netip.MustParsePrefix("172.16.0.0/12"), classPrivate},
	{netip.MustParsePrefix("192.0.0.0/24"), classIETF},
	{netip.MustParsePrefix("192.0.2.0/24"), classDocumentation},
	{netip.MustParsePrefix("192.88.99.0/24"), classReserved},
	{netip.MustParsePrefix("192.168.0.0/16"), classPrivate},
	{netip.MustParsePrefix("198.18.0.0/15"), classBenchmarking},
	{netip.MustParsePrefix("198.51.100.0/24"), classDocumentation},
	{netip.MustParsePrefix("203.0.113.0/24"), classDocumentation},
	{netip.MustParsePrefix("224.0.0.0/4"), classMulticast},
	{netip.MustParsePrefix("240.0.0.0/4"), classReserved},
}

// IPv6 ranges with an IPv4 address inside, or handled on their own.
var (
	global6     = netip.MustParsePrefix("2000::/3")
	compat6     = netip.MustParsePrefix("::/96")
	nat64       = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour   = netip.MustParsePrefix("2002::/16")
	teredo      = netip.MustParsePrefix("2001::/32")
	ietf6       = netip.MustParsePrefix("2001::/23")
	benchmark6  = netip.MustParsePrefix("2001:2::/48")
	unspecified = netip.IPv6Unspecified()
	loopback6   = netip.IPv6Loopback()
)

// refused6 are the IPv6 ranges DefaultPolicy refuses by class, checked before the rule that
// refuses everything outside 2000::/3 as reserved.
var refused6 = []prefixClass{
	{netip.MustParsePrefix("fc00::/7"), classPrivate},
	{netip.MustParsePrefix("fec0::/10"), classPrivate},
	{netip.MustParsePrefix("fe80::/10"), classLinkLocal},
	{netip.MustParsePrefix("ff00::/8"), classMulticast},
	{netip.MustParsePrefix("2001:db8::/32"), classDocumentation},
	{netip.MustParsePrefix("3fff::/20"), classDocumentation},
	{netip.MustParsePrefix("64:ff9b:1::/48"), classPrivate},
	{netip.MustParsePrefix("100::/64"), classReserved},
}

// classify returns the class of a refused address, or "" for an allowed one.
func classify(a netip.Addr) string {
	if !a.IsValid() {
		return classInvalid
	}
	if a.Zone() != "" {
		return classScoped
	}
	a = a.Unmap()
	if a.Is4() {
		return classify4(a)
	}
	switch {
	case a == unspecified:
		return classUnspecified
	case a == loopback6:
		return classLoopback
	case compat6.Contains(a):
		if c := classify4(embedded4(a, 12)); c != "" {
			return c
		}
		return classReserved
	case nat64.Contains(a):
		return classify4(embedded4(a, 12))
	case sixToFour.Contains(a):
		return classify4(embedded4(a, 2))
	case teredo.Contains(a):
		if c := classify4(embedded4(a, 4)); c != "" { // the Teredo server
			return c
		}
		client := embedded4(a, 12).As4()
		for i := range client { // the client's address is stored inverted
			client[i] ^= 0xff
		}
		return classify4(netip.AddrFrom4(client))
	case benchmark6.Contains(a):
		return classBenchmarking
	case ietf6.Contains(a):
		return classIETF
	}
	for _, r := range refused6 {
		if r.prefix.Contains(a) {
			return r.class
		}
	}
	if !global6.Contains(a) {
		return classReserved
	}
	return ""
}

// classify4 is classify for an IPv4 address.
func classify4(a netip.Addr) string {
	for _, r := range refused4 {
		if r.prefix.Contains(a) {
			return r.class
		}
	}
	return ""
}

// embedded4 returns the IPv4 address at byte offset off of the IPv6 address a.
func embedded4(a netip.Addr, off int) netip.Addr {
	b := a.As16()
	return netip.AddrFrom4([4]byte(b[off : off+4]))
}
