package webhook

import (
	"errors"
	"net/netip"
	"testing"
)

func TestDefaultPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr  string
		class string // "" for allowed
	}{
		// Public addresses are allowed, in every form that carries them.
		{"8.8.8.8", ""},
		{"1.1.1.1", ""},
		{"93.184.215.14", ""},
		{"172.15.255.255", ""},
		{"172.32.0.0", ""},
		{"100.63.255.255", ""},
		{"100.128.0.0", ""},
		{"169.253.255.255", ""},
		{"198.17.255.255", ""},
		{"198.20.0.0", ""},
		{"223.255.255.255", ""},
		{"2606:4700:4700::1111", ""},
		{"2001:4860:4860::8888", ""},
		{"::ffff:8.8.8.8", ""},
		{"64:ff9b::8.8.8.8", ""},
		{"2002:0808:0808::1", ""},              // 6to4 of 8.8.8.8
		{"2001:0:0808:0808:0:0:f7f7:f7f7", ""}, // Teredo: server 8.8.8.8, client 8.8.8.8
		{"2001:4:112::1", classIETF},           // AS112: global, but not a webhook receiver; 2001::/23 but Teredo is refused
		// IPv4.
		{"0.0.0.0", classUnspecified},
		{"0.1.2.3", classUnspecified},
		{"10.0.0.1", classPrivate},
		{"10.255.255.255", classPrivate},
		{"100.64.0.1", classShared},
		{"100.100.100.200", classShared}, // a cloud's metadata service, in CGNAT space
		{"127.0.0.1", classLoopback},
		{"127.0.0.2", classLoopback},
		{"127.255.255.254", classLoopback},
		{"169.254.0.1", classLinkLocal},
		{"169.254.169.254", classMetadata},
		{"172.16.0.1", classPrivate},
		{"172.31.255.255", classPrivate},
		{"192.0.0.8", classIETF},
		{"192.0.2.1", classDocumentation},
		{"192.88.99.1", classReserved},
		{"192.168.1.1", classPrivate},
		{"198.18.0.1", classBenchmarking},
		{"198.19.255.255", classBenchmarking},
		{"198.51.100.7", classDocumentation},
		{"203.0.113.9", classDocumentation},
		{"224.0.0.1", classMulticast},
		{"239.255.255.250", classMulticast},
		{"240.0.0.1", classReserved},
		{"255.255.255.254", classReserved},
		{"255.255.255.255", classBroadcast},
		// IPv6.
		{"::", classUnspecified},
		{"::1", classLoopback},
		{"fc00::1", classPrivate},
		{"fd12:3456::1", classPrivate},
		{"fd00:ec2::254", classPrivate}, // a cloud's IPv6 metadata service
		{"fec0::1", classPrivate},
		{"fe80::1", classLinkLocal},
		{"febf::1", classLinkLocal},
		{"ff02::1", classMulticast},
		{"2001:db8::1", classDocumentation},
		{"3fff::1", classDocumentation},
		{"2001:2::1", classBenchmarking},
		{"2001:100::1", classIETF},
		{"100::1", classReserved},
		{"64:ff9b:1::1", classPrivate},
		{"4000::1", classReserved}, // outside 2000::/3
		{"5f00::1", classReserved},
		{"1::1", classReserved},
		// IPv4 refused in IPv6 forms.
		{"::ffff:127.0.0.1", classLoopback},
		{"::ffff:10.1.2.3", classPrivate},
		{"::ffff:169.254.169.254", classMetadata},
		{"::ffff:0.0.0.0", classUnspecified},
		{"::127.0.0.1", classLoopback},        // IPv4-compatible
		{"::10.0.0.1", classPrivate},          // IPv4-compatible
		{"::8.8.8.8", classReserved},          // IPv4-compatible, deprecated whatever it holds
		{"64:ff9b::127.0.0.1", classLoopback}, // NAT64
		{"64:ff9b::169.254.169.254", classMetadata},
		{"64:ff9b::192.168.0.1", classPrivate},
		{"2002:7f00:0001::1", classLoopback},              // 6to4 of 127.0.0.1
		{"2002:a9fe:a9fe::1", classMetadata},              // 6to4 of 169.254.169.254
		{"2002:c0a8:0101::1", classPrivate},               // 6to4 of 192.168.1.1
		{"2001:0:7f00:1::1", classLoopback},               // Teredo server 127.0.0.1
		{"2001:0:0808:0808:0:0:80ff:fffe", classLoopback}, // Teredo client 127.0.0.1 (inverted)
		{"2001:0:0808:0808:0:0:f5ff:fffe", classPrivate},  // Teredo client 10.0.0.1 (inverted)
		// Zones.
		{"fe80::1%eth0", classScoped},
		{"2001:4860:4860::8888%eth0", classScoped},
	}
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr)
		err := DefaultPolicy(a)
		if tt.class == "" {
			if err != nil {
				t.Errorf("DefaultPolicy(%s) = %v, want allowed", tt.addr, err)
			}
			continue
		}
		var ae *AddressError
		if !errors.As(err, &ae) || ae.Class != tt.class {
			t.Errorf("DefaultPolicy(%s) = %v, want refused as %q", tt.addr, err, tt.class)
			continue
		}
		if ae.Reason() != ReasonAddressRefused || ae.Addr != a {
			t.Errorf("DefaultPolicy(%s): reason %q, address %s", tt.addr, ae.Reason(), ae.Addr)
		}
		if want := "address refused: " + tt.class; err.Error() != want {
			t.Errorf("DefaultPolicy(%s) says %q, want %q (the class, not the address)", tt.addr, err, want)
		}
	}
	if err := DefaultPolicy(netip.Addr{}); err == nil {
		t.Error("DefaultPolicy(the zero Addr) = nil, want refused")
	}
	for _, s := range []string{"127.0.0.1", "::1", "169.254.169.254"} {
		if err := AllowAll(netip.MustParseAddr(s)); err != nil {
			t.Errorf("AllowAll(%s) = %v", s, err)
		}
	}
}

func TestDialControl(t *testing.T) {
	t.Parallel()
	control := dialControl(DefaultPolicy)
	for _, tt := range []struct {
		network, address string
		ok               bool
	}{
		{"tcp4", "8.8.8.8:443", true},
		{"tcp6", "[2001:4860:4860::8888]:443", true},
		{"tcp4", "127.0.0.1:443", false},
		{"tcp6", "[::1]:443", false},
		{"tcp6", "[::ffff:127.0.0.1]:443", false},
		{"tcp6", "[fe80::1%eth0]:443", false},
		{"udp4", "8.8.8.8:53", false},
		{"tcp4", "example.com:443", false},
	} {
		err := control(tt.network, tt.address, nil)
		if (err == nil) != tt.ok {
			t.Errorf("control(%s, %s) = %v, want allowed %v", tt.network, tt.address, err, tt.ok)
		}
	}
}
