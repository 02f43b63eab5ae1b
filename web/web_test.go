package web

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
)

func TestHandler(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"index.html":          {Data: []byte("<!doctype html><title>paygate</title>")},
		"favicon.svg":         {Data: []byte("<svg/>")},
		"assets/index-abc.js": {Data: []byte("console.log(1)")},
	}
	h := Handler(fsys)
	tests := []struct {
		method, path string
		code         int
		body         string // a substring of the body
		cache        string
		ctype        string
	}{
		{"GET", "/", 200, "<title>paygate", "no-cache", "text/html"},
		{"HEAD", "/", 200, "", "no-cache", "text/html"},
		{"GET", "/history", 200, "<title>paygate", "no-cache", "text/html"},
		{"GET", "/some/page", 200, "<title>paygate", "no-cache", "text/html"},
		{"GET", "/assets", 200, "<title>paygate", "no-cache", "text/html"},
		{"GET", "/assets/index-abc.js", 200, "console.log", "public, max-age=31536000, immutable", "text/javascript"},
		{"GET", "/favicon.svg", 200, "<svg/>", "no-cache", "image/svg+xml"},
		{"GET", "/assets/missing.js", 404, "", "", ""},
		{"GET", "/robots.txt", 404, "", "", ""},
		{"GET", "/../../etc/passwd", 400, "", "", ""}, // refused by http.ServeFileFS
		{"GET", "/paygate.bank.v1.BankService/PrepareTransaction", 404, "", "", ""},
		{"POST", "/paygate.bank.v1.BankService/PrepareTransaction", 404, "", "", ""},
		{"POST", "/paygate.gateway.v1.CoordinatorService/GetDecision", 404, "", "", ""},
		{"POST", "/", 404, "", "", ""},
		{"DELETE", "/history", 404, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			res := rec.Result()
			if res.StatusCode != tt.code {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.code)
			}
			if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("Content-Security-Policy = %q", csp)
			}
			if res.Header.Get("X-Content-Type-Options") != "nosniff" || res.Header.Get("Referrer-Policy") != "no-referrer" {
				t.Errorf("security headers missing: %v", res.Header)
			}
			if tt.code != http.StatusOK {
				return
			}
			if !strings.Contains(rec.Body.String(), tt.body) {
				t.Errorf("body %q does not contain %q", rec.Body.String(), tt.body)
			}
			if got := res.Header.Get("Cache-Control"); got != tt.cache {
				t.Errorf("Cache-Control = %q, want %q", got, tt.cache)
			}
			if got := res.Header.Get("Content-Type"); !strings.HasPrefix(got, tt.ctype) {
				t.Errorf("Content-Type = %q, want %s", got, tt.ctype)
			}
			if res.Header.Get("ETag") == "" {
				t.Errorf("no ETag")
			}
		})
	}
}

func TestHandlerRevalidates(t *testing.T) {
	t.Parallel()
	h := Handler(fstest.MapFS{"index.html": {Data: []byte("<p>hi</p>")}})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	etag := rec.Result().Header.Get("ETag")
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified {
		t.Fatalf("If-None-Match %s: status %d, want 304", etag, rec.Code)
	}
}

// TestDistFS checks that the embedded build has an index.html that loads its hashed assets, and
// nothing from another origin.
func TestDistFS(t *testing.T) {
	t.Parallel()
	fsys := DistFS()
	index, err := fs.ReadFile(fsys, "index.html")
	if err != nil {
		t.Fatalf("the embedded dashboard has no index.html (run scripts/web.sh): %v", err)
	}
	if !strings.Contains(string(index), `src="/assets/`) {
		t.Errorf("index.html does not load a script from /assets/:\n%s", index)
	}
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		for _, bad := range []string{"<link href=\"http", "src=\"http", "@import url(http", "fonts.googleapis", "://cdn"} {
			if strings.Contains(string(data), bad) {
				t.Errorf("%s refers to an external asset (%q)", p, bad)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
