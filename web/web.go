// Package web is paygate's browser dashboard: the TypeScript app in web/src, built by Vite into
// web/dist and embedded in the binary, so that `go build` needs only Go.
//
// The gateway serves Handler on its web listener (server TLS, no client certificate), next to
// the user-facing Connect services the dashboard calls. scripts/web.sh rebuilds dist/;
// scripts/check.sh fails when the committed dist/ is not what the sources build.
package web

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed all:dist
var dist embed.FS

// DistFS returns the built dashboard: index.html, favicon.svg and assets/.
func DistFS() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // "dist" is a valid path; fs.Sub fails only on invalid ones
	}
	return sub
}

// Security headers of every response. The page loads only its own files and calls only its own
// origin; it may not be framed.
var securityHeaders = map[string]string{
	"Content-Security-Policy":      "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'",
	"X-Content-Type-Options":       "nosniff",
	"Referrer-Policy":              "no-referrer",
	"X-Frame-Options":              "DENY",
	"Cross-Origin-Opener-Policy":   "same-origin",
	"Cross-Origin-Resource-Policy": "same-origin",
	"Permissions-Policy":           "camera=(), microphone=(), geolocation=(), payment=()",
}

// Handler serves the dashboard from fsys (DistFS in production):
//
//   - files by path; Vite's content-hashed files under /assets/ are cached for a year
//     (immutable), everything else is revalidated on each use (no-cache, with an ETag);
//   - index.html for any other GET of a page path (no file extension), so that the app's own
//     paths load it;
//   - 404 for everything else: other methods, missing assets, and paths that look like RPCs
//     ("/pkg.Service/Method") of services not mounted on the listener, such as the bank and
//     coordinator services on the web listener.
func Handler(fsys fs.FS) http.Handler {
	etags := map[string]string{}
	_ = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		etags[p] = `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`
		return nil
	})
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		for k, v := range securityHeaders {
			h.Set(k, v)
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.NotFound(w, r)
			return
		}
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		if name == "" {
			name = "index.html"
		}
		etag, ok := etags[name]
		switch {
		case ok:
		case looksLikeFile(name):
			http.NotFound(w, r)
			return
		default: // a page of the app
			name = "index.html"
			etag = etags[name]
		}
		if strings.HasPrefix(name, "assets/") {
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			h.Set("Cache-Control", "no-cache")
		}
		h.Set("ETag", etag)
		if name == "index.html" {
			// FileServer redirects a request for /index.html to /; serve the file directly.
			http.ServeFileFS(w, r, fsys, name)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/" + name
		files.ServeHTTP(w, r2)
	})
}

// looksLikeFile reports whether the last element of p has an extension ("app.js") or p is an
// RPC path ("paygate.bank.v1.BankService/PrepareTransaction"): not a page of the app.
func looksLikeFile(p string) bool {
	first, _, _ := strings.Cut(p, "/")
	return strings.Contains(path.Base(p), ".") || strings.Contains(first, ".")
}
