package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

const testSecret = "whsec_test-secret"

var (
	testBody = []byte(`{"id":"evt_1","type":"payment.succeeded","amount":2500}`)
	testTime = time.Date(2027, 3, 4, 5, 6, 7, 0, time.UTC)
)

// referenceMAC computes the v1 signature from its definition, independently of mac.
func referenceMAC(secret string, unix int64, body []byte) string {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(strconv.FormatInt(unix, 10) + "." + string(body)))
	return hex.EncodeToString(h.Sum(nil))
}

func TestSignFormat(t *testing.T) {
	t.Parallel()
	got := Sign(testSecret, testTime, testBody)
	want := "t=" + strconv.FormatInt(testTime.Unix(), 10) + ",v1=" + referenceMAC(testSecret, testTime.Unix(), testBody)
	if got != want {
		t.Fatalf("Sign = %q, want %q", got, want)
	}
	multi := SignMulti([]string{"whsec_old", "whsec_new"}, testTime, testBody)
	want = "t=" + strconv.FormatInt(testTime.Unix(), 10) +
		",v1=" + referenceMAC("whsec_old", testTime.Unix(), testBody) +
		",v1=" + referenceMAC("whsec_new", testTime.Unix(), testBody)
	if multi != want {
		t.Fatalf("SignMulti = %q, want %q", multi, want)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	signed := Sign(testSecret, testTime, testBody)
	unix := strconv.FormatInt(testTime.Unix(), 10)
	good := referenceMAC(testSecret, testTime.Unix(), testBody)
	other := referenceMAC("whsec_other", testTime.Unix(), testBody)
	tests := []struct {
		name      string
		secret    string
		header    string
		body      []byte
		tolerance time.Duration
		now       time.Time
		want      error // nil: accepted
	}{
		{"round trip", testSecret, signed, testBody, 0, testTime, nil},
		{"within tolerance, late", testSecret, signed, testBody, 0, testTime.Add(DefaultTolerance), nil},
		{"within tolerance, early", testSecret, signed, testBody, 0, testTime.Add(-DefaultTolerance), nil},
		{"tampered body", testSecret, signed, append(bytes.Clone(testBody), ' '), 0, testTime, ErrSignature},
		{"body with a byte changed", testSecret, signed, bytes.Replace(testBody, []byte("2500"), []byte("2501"), 1), 0, testTime, ErrSignature},
		{"wrong secret", "whsec_other", signed, testBody, 0, testTime, ErrSignature},
		{"empty secret", "", Sign("", testTime, testBody), testBody, 0, testTime, ErrSignature},
		{"two v1, the second right", testSecret, SignMulti([]string{"whsec_old", testSecret}, testTime, testBody), testBody, 0, testTime, nil},
		{"two v1, the first right", testSecret, SignMulti([]string{testSecret, "whsec_new"}, testTime, testBody), testBody, 0, testTime, nil},
		{"two v1, none right", testSecret, SignMulti([]string{"whsec_old", "whsec_new"}, testTime, testBody), testBody, 0, testTime, ErrSignature},
		{"order reversed", testSecret, "v1=" + good + ",t=" + unix, testBody, 0, testTime, nil},
		{"spaces around entries", testSecret, " t=" + unix + " , v1=" + good + " ", testBody, 0, testTime, nil},
		{"unknown schemes ignored", testSecret, "t=" + unix + ",v0=abc,v2=" + other + ",v1=" + good, testBody, 0, testTime, nil},
		{"upper-case hex", testSecret, "t=" + unix + ",v1=" + strings.ToUpper(good), testBody, 0, testTime, nil},
		{"signature of another timestamp", testSecret, "t=" + strconv.FormatInt(testTime.Unix()+1, 10) + ",v1=" + good, testBody, 0, testTime, ErrSignature},
		{"too old", testSecret, signed, testBody, 0, testTime.Add(DefaultTolerance + time.Second), ErrTimestamp},
		{"too far in the future", testSecret, signed, testBody, 0, testTime.Add(-DefaultTolerance - time.Second), ErrTimestamp},
		{"own tolerance, old", testSecret, signed, testBody, time.Minute, testTime.Add(61 * time.Second), ErrTimestamp},
		{"own tolerance, in time", testSecret, signed, testBody, time.Minute, testTime.Add(59 * time.Second), nil},
		{"no timestamp check", testSecret, signed, testBody, -1, testTime.Add(1000 * time.Hour), nil},
		{"no timestamp check, forged", testSecret, signed, []byte("x"), -1, testTime, ErrSignature},
		{"forged and old: signature first", "whsec_other", signed, testBody, 0, testTime.Add(time.Hour), ErrSignature},
		{"empty body signed", testSecret, Sign(testSecret, testTime, nil), []byte{}, 0, testTime, nil},
		{"empty body, signature of another", testSecret, signed, nil, 0, testTime, ErrSignature},
		{"timestamp 0", testSecret, Sign(testSecret, time.Unix(0, 0), testBody), testBody, -1, testTime, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := VerifyAt(tt.secret, tt.header, tt.body, tt.tolerance, tt.now)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("VerifyAt = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("VerifyAt = %v, want %v", err, tt.want)
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Fatalf("the error %q names the secret", err)
			}
		})
	}
}

func TestVerifyMalformed(t *testing.T) {
	t.Parallel()
	unix := strconv.FormatInt(testTime.Unix(), 10)
	good := referenceMAC(testSecret, testTime.Unix(), testBody)
	for _, header := range []string{
		"",
		"   ",
		",,,",
		"garbage",
		"t=" + unix,                            // no v1
		"v1=" + good,                           // no t
		"t=" + unix + ",v0=" + good,            // only another scheme
		"t=" + unix + ",v1=",                   // empty signature
		"t=" + unix + ",v1=" + good[:62],       // short
		"t=" + unix + ",v1=" + good + "00",     // long
		"t=" + unix + ",v1=" + good[:63] + "g", // not hex
		"t=,v1=" + good,
		"t=-" + unix + ",v1=" + good,
		"t=+" + unix + ",v1=" + good,
		"t=0" + unix + ",v1=" + good,  // leading zero
		"t=" + unix + ".5,v1=" + good, // fraction
		"t=1e9,v1=" + good,
		"t=99999999999999999999,v1=" + good, // overflows int64
		"t=" + unix + ",t=" + unix + ",v1=" + good,
		"t=" + unix + ",v1" + good,       // no '='
		"t=" + unix + ",junk,v1=" + good, // an entry without '='
		"T=" + unix + ",V1=" + good,      // keys are case-sensitive
		"t=" + unix + ";v1=" + good,      // wrong separator
		"t=" + unix + ",v1=" + good + "," + strings.Repeat("x", maxHeaderLen),
	} {
		err := VerifyAt(testSecret, header, testBody, -1, testTime)
		if !errors.Is(err, ErrNoSignature) {
			t.Errorf("VerifyAt(%.80q) = %v, want ErrNoSignature", header, err)
		}
	}
}

func TestVerifyErrorsDoNotEchoTheHeader(t *testing.T) {
	t.Parallel()
	const marker = "zz-marker-zz"
	for _, header := range []string{
		"t=" + marker + ",v1=" + marker,
		"t=1,v1=" + strings.Repeat("ab", 32) + ",v9=" + marker,
		marker,
	} {
		err := VerifyAt(testSecret, header, testBody, -1, testTime)
		if err == nil || strings.Contains(err.Error(), marker) {
			t.Errorf("VerifyAt(%q) = %v: want an error that does not repeat the header", header, err)
		}
	}
}

func TestReadVerified(t *testing.T) {
	t.Parallel()
	newRequest := func(body []byte, header string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/hook", bytes.NewReader(body))
		if header != "" {
			r.Header.Set(SignatureHeader, header)
		}
		return r
	}
	now := time.Now()
	got, err := ReadVerified(newRequest(testBody, Sign(testSecret, now, testBody)), testSecret, int64(len(testBody)))
	if err != nil || !bytes.Equal(got, testBody) {
		t.Fatalf("ReadVerified = %q, %v; want the body", got, err)
	}
	if _, err := ReadVerified(newRequest(testBody, Sign(testSecret, now, testBody)), testSecret, int64(len(testBody)-1)); !errors.Is(err, ErrBodyTooLarge) {
		t.Fatalf("ReadVerified over the limit = %v, want ErrBodyTooLarge", err)
	}
	if _, err := ReadVerified(newRequest(testBody, ""), testSecret, 0); !errors.Is(err, ErrNoSignature) {
		t.Fatalf("ReadVerified without a header = %v, want ErrNoSignature", err)
	}
	if _, err := ReadVerified(newRequest(testBody, Sign("whsec_other", now, testBody)), testSecret, 0); !errors.Is(err, ErrSignature) {
		t.Fatalf("ReadVerified with another secret = %v, want ErrSignature", err)
	}
	if _, err := ReadVerified(newRequest(testBody, Sign(testSecret, now.Add(-time.Hour), testBody)), testSecret, 0); !errors.Is(err, ErrTimestamp) {
		t.Fatalf("ReadVerified of an old event = %v, want ErrTimestamp", err)
	}
	// The body is not read when there is no signature to check it against.
	body := &countingReader{r: bytes.NewReader(testBody)}
	r := httptest.NewRequest(http.MethodPost, "/hook", body)
	if _, err := ReadVerified(r, testSecret, 0); !errors.Is(err, ErrNoSignature) || body.n != 0 {
		t.Fatalf("ReadVerified without a header = %v after reading %d bytes, want ErrNoSignature after none", err, body.n)
	}
}

// countingReader counts the bytes read from r.
type countingReader struct {
	r interface{ Read([]byte) (int, error) }
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// FuzzVerify checks that Verify never panics and accepts only a header with a v1 that Sign
// would have made for its timestamp, the body and the secret.
func FuzzVerify(f *testing.F) {
	f.Add(testSecret, Sign(testSecret, testTime, testBody), testBody, testTime.Unix())
	f.Add(testSecret, SignMulti([]string{"a", testSecret}, testTime, testBody), testBody, int64(0))
	f.Add("", "t=1,v1=", []byte{}, int64(1))
	f.Add("s", " v1=00 ,t=01,,", []byte("x"), int64(-5))
	f.Fuzz(func(t *testing.T, secret, header string, body []byte, unix int64) {
		// An arbitrary header: accepted only if one of its v1 entries is the right MAC.
		if err := VerifyAt(secret, header, body, -1, testTime); err == nil {
			var ts string
			var sigs []string
			for _, item := range strings.Split(header, ",") {
				k, v, _ := strings.Cut(strings.TrimSpace(item), "=")
				switch k {
				case "t":
					ts = v
				case "v1":
					sigs = append(sigs, strings.ToLower(v))
				}
			}
			n, perr := strconv.ParseInt(ts, 10, 64)
			if perr != nil || strconv.FormatInt(n, 10) != ts || secret == "" {
				t.Fatalf("VerifyAt accepted %q (secret %q) with timestamp %q", header, secret, ts)
			}
			want := referenceMAC(secret, n, body)
			found := false
			for _, s := range sigs {
				found = found || s == want
			}
			if !found {
				t.Fatalf("VerifyAt accepted %q for body %q and secret %q; the MAC is %s", header, body, secret, want)
			}
		}
		// What Sign makes is accepted, and not for another body or secret.
		if unix < 0 {
			return
		}
		at := time.Unix(unix, 0)
		signed := Sign(secret, at, body)
		err := VerifyAt(secret, signed, body, -1, testTime)
		if secret == "" {
			if !errors.Is(err, ErrSignature) {
				t.Fatalf("VerifyAt with an empty secret = %v, want ErrSignature", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("VerifyAt(Sign(...)) = %v", err)
		}
		if err := VerifyAt(secret, signed, append(bytes.Clone(body), 0), -1, testTime); !errors.Is(err, ErrSignature) {
			t.Fatalf("VerifyAt with a byte appended to the body = %v, want ErrSignature", err)
		}
		if err := VerifyAt(secret+"x", signed, body, -1, testTime); !errors.Is(err, ErrSignature) {
			t.Fatalf("VerifyAt with another secret = %v, want ErrSignature", err)
		}
	})
}
