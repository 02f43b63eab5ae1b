package webhook

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateURL(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		raw       string
		allowHTTP bool
		want      string // the URL returned
	}{
		{"https://example.com/hooks/paygate", false, "https://example.com/hooks/paygate"},
		{"https://example.com", false, "https://example.com"},
		{"HTTPS://Example.COM:8443/x?a=1", false, "https://example.com:8443/x?a=1"},
		{"https://example.com./x", false, "https://example.com./x"},
		{"https://hooks_1.example-shop.com/x", false, "https://hooks_1.example-shop.com/x"},
		{"https://xn--bcher-kva.example/", false, "https://xn--bcher-kva.example/"},
		{"https://93.184.215.14/x", false, "https://93.184.215.14/x"},
		{"https://127.0.0.1/x", false, "https://127.0.0.1/x"}, // literal: CheckLiteral's business
		{"https://[2001:db8::1]:443/", false, "https://[2001:db8::1]:443/"},
		{"https://example.com:65535/", false, "https://example.com:65535/"},
		{"http://localhost:8080/hook", true, "http://localhost:8080/hook"},
		{"https://example.com/" + strings.Repeat("a", MaxURLLength-len("https://example.com/")), false, ""},
	} {
		u, err := ValidateURL(tt.raw, tt.allowHTTP)
		if err != nil {
			t.Errorf("ValidateURL(%.60q) = %v", tt.raw, err)
			continue
		}
		if want := tt.want; want != "" && u.String() != want {
			t.Errorf("ValidateURL(%q) = %q, want %q", tt.raw, u, want)
		}
	}
}

func TestValidateURLRefuses(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		raw    string
		reason string
	}{
		{"https://example.com/" + strings.Repeat("a", MaxURLLength), ReasonURLTooLong},
		{"", ReasonURLScheme},
		{"example.com/hook", ReasonURLScheme},
		{"//example.com/hook", ReasonURLScheme},
		{"/hook", ReasonURLScheme},
		{"http://example.com/hook", ReasonURLScheme},
		{"ftp://example.com/hook", ReasonURLScheme},
		{"file:///etc/passwd", ReasonURLScheme},
		{"gopher://127.0.0.1:6379/_", ReasonURLScheme},
		{"javascript:alert(1)", ReasonURLScheme},
		{"https:example.com", ReasonURLHost},
		{"https://", ReasonURLHost},
		{"https:///hook", ReasonURLHost},
		{"https://:443/hook", ReasonURLHost},
		{"https://user:pass@example.com/", ReasonURLUserinfo},
		{"https://user@example.com/", ReasonURLUserinfo},
		{"https://@example.com/", ReasonURLUserinfo},
		{"https://example.com/#frag", ReasonURLFragment},
		{"https://example.com/#", ReasonURLFragment},
		{"https://example.com:0/", ReasonURLPort},
		{"https://example.com:65536/", ReasonURLPort},
		{"https://example.com:080/", ReasonURLPort},
		{"https://example.com:/", ReasonURLPort},
		{"https://example.com:99999999999999999999/", ReasonURLPort},
		{"https://exa mple.com/", ReasonURLInvalid},
		{"https://example.com/\n", ReasonURLInvalid},
		{"https://example.com/a\tb", ReasonURLInvalid},
		{"https://example.com\x00.evil/", ReasonURLInvalid},
		{"https://exa%6dple.com/", ReasonURLInvalid},
		{"https://bücher.example/", ReasonURLHost},
		{"https://a..b/", ReasonURLHost},
		{"https://" + strings.Repeat("a", 64) + ".com/", ReasonURLHost},
		{"https://ex!ample.com/", ReasonURLHost},
		{"https://127.1/", ReasonURLHost},
		{"https://2130706433/", ReasonURLHost},
		{"https://0x7f000001/", ReasonURLHost},
		{"https://0x7f.0.0.1/", ReasonURLHost},
		{"https://0177.0.0.1/", ReasonURLHost},
		{"https://127.0.0.1./", ReasonURLHost},
		{"https://example.123/", ReasonURLHost},
		{"https://[fe80::1%25eth0]/", ReasonURLHost},
		{"https://[::1/", ReasonURLInvalid},
	} {
		_, err := ValidateURL(tt.raw, false)
		var ue *URLError
		if !errors.As(err, &ue) || ue.Reason != tt.reason {
			t.Errorf("ValidateURL(%.60q) = %v, want reason %s", tt.raw, err, tt.reason)
			continue
		}
		if ue.Msg == "" || !strings.HasPrefix(err.Error(), "webhook URL: ") {
			t.Errorf("ValidateURL(%q): message %q", tt.raw, err)
		}
	}
}

func TestCheckLiteral(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		raw string
		ok  bool
	}{
		{"https://example.com/", true},
		{"https://localhost/", true}, // a name: the dial guard's business
		{"https://8.8.8.8/", true},
		{"https://127.0.0.1/", false},
		{"https://[::1]:8443/", false},
		{"https://[::ffff:127.0.0.1]/", false},
		{"https://169.254.169.254/latest/meta-data/", false},
		{"https://10.0.0.1/", false},
	} {
		u, err := ValidateURL(tt.raw, false)
		if err != nil {
			t.Fatalf("ValidateURL(%q) = %v", tt.raw, err)
		}
		err = CheckLiteral(u, DefaultPolicy)
		if (err == nil) != tt.ok {
			t.Errorf("CheckLiteral(%q) = %v, want allowed %v", tt.raw, err, tt.ok)
		}
		if err := CheckLiteral(u, AllowAll); err != nil {
			t.Errorf("CheckLiteral(%q, AllowAll) = %v", tt.raw, err)
		}
	}
}

// FuzzValidateURL checks that ValidateURL never panics, and that what it accepts is an https
// URL with a host and without credentials or fragment, which it accepts again unchanged.
func FuzzValidateURL(f *testing.F) {
	for _, s := range []string{"https://example.com/x?y=1", "https://[::1]:8443/", "https://user@h/", "http://h", "https://127.1/", "https://a..b", "https://h:0/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := ValidateURL(raw, false)
		if err != nil {
			var ue *URLError
			if !errors.As(err, &ue) || ue.Reason == "" {
				t.Fatalf("ValidateURL(%q) = %v, not a URLError with a reason", raw, err)
			}
			return
		}
		if u.Scheme != "https" || u.Hostname() == "" || u.User != nil || u.Fragment != "" || u.Opaque != "" || len(raw) > MaxURLLength {
			t.Fatalf("ValidateURL(%q) accepted %#v", raw, u)
		}
		again, err := ValidateURL(u.String(), false)
		if err != nil || again.String() != u.String() {
			t.Fatalf("ValidateURL(%q) = %q, which validates as %v, %v", raw, u, again, err)
		}
	})
}
