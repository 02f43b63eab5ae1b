package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/paygate/paygate/internal/metrics"
	"github.com/paygate/paygate/services/gateway"
)

// tlsFlags are the PKI flags of a server. --certs DIR fills in the conventional file names of
// `paygate certs` for whatever is not given explicitly.
type tlsFlags struct {
	certs, ca, cert, key string
}

func (t *tlsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.certs, "certs", "", "directory made by 'paygate certs'; fills in --ca, --cert and --key by their usual names")
	fs.StringVar(&t.ca, "ca", "", "CA certificate (PEM) that signs every party's certificate")
	fs.StringVar(&t.cert, "cert", "", "this server's certificate (PEM)")
	fs.StringVar(&t.key, "key", "", "this server's private key (PEM)")
}

// resolve returns the CA, certificate and key paths, using base ("gateway", "bank-bank1") for
// the names under --certs.
func (t *tlsFlags) resolve(base string) (ca, cert, key string, err error) {
	ca, cert, key = t.ca, t.cert, t.key
	if t.certs != "" {
		if ca == "" {
			ca = filepath.Join(t.certs, "ca.pem")
		}
		if cert == "" {
			cert = filepath.Join(t.certs, base+".pem")
		}
		if key == "" {
			key = filepath.Join(t.certs, base+"-key.pem")
		}
	}
	if ca == "" || cert == "" || key == "" {
		return "", "", "", usageErrorf("--ca, --cert and --key are required (or --certs DIR)")
	}
	return ca, cert, key, nil
}

// bankAddrs is the repeatable --bank NAME=ADDR flag. ADDR is HOST:PORT or https://HOST:PORT.
// One value may also list several banks separated by commas, which is how PAYGATE_BANK sets
// them all.
type bankAddrs map[string]string

func (b bankAddrs) String() string {
	names := make([]string, 0, len(b))
	for n := range b {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + "=" + b[n]
	}
	return strings.Join(parts, ",")
}

func (b bankAddrs) Set(v string) error {
	for _, item := range splitList(v) {
		name, addr, ok := strings.Cut(item, "=")
		if !ok || name == "" || addr == "" {
			return fmt.Errorf("want NAME=HOST:PORT, got %q", item)
		}
		if _, dup := b[name]; dup {
			return fmt.Errorf("bank %s given twice", name)
		}
		if !strings.HasPrefix(addr, "https://") {
			if strings.Contains(addr, "://") {
				return fmt.Errorf("bank %s: address %q: only https:// is supported", name, addr)
			}
			addr = "https://" + addr
		}
		b[name] = addr
	}
	return nil
}

// gatewayAddrs is a bank's --gateway flag: the gateway's address, HOST:PORT or
// https://HOST:PORT, or several replicas' addresses separated by commas (which is also how
// PAYGATE_GATEWAY gives them). Repeating the flag adds to the list.
type gatewayAddrs struct{ urls []string }

func (g *gatewayAddrs) String() string {
	if g == nil {
		return ""
	}
	return strings.Join(g.urls, ",")
}

func (g *gatewayAddrs) Set(v string) error {
	items := splitList(v)
	if len(items) == 0 {
		return fmt.Errorf("want HOST:PORT[,HOST:PORT...], got %q", v)
	}
	for _, item := range items {
		addr := strings.TrimPrefix(item, "https://")
		if strings.Contains(addr, "://") {
			return fmt.Errorf("address %q: only https:// is supported", item)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" || port == "" || strings.ContainsAny(addr, "/?#") {
			return fmt.Errorf("address %q: want HOST:PORT or https://HOST:PORT", item)
		}
		u := "https://" + addr
		if slices.Contains(g.urls, u) {
			return fmt.Errorf("address %q given twice", item)
		}
		g.urls = append(g.urls, u)
	}
	return nil
}

// limitFlags are the gateway's per-user caps, which bound what one user (or a stolen
// password) can hold open.
type limitFlags struct {
	sessions, watchers int
}

func (l *limitFlags) register(fs *flag.FlagSet, d gateway.Config) {
	fs.IntVar(&l.sessions, "max-sessions-per-user", d.MaxSessionsPerUser, "most live login sessions of one user; a login beyond it is refused (too_many_sessions) until one is logged out or expires")
	fs.IntVar(&l.watchers, "max-watchers-per-user", d.MaxWatchersPerUser, "most WatchPayments streams one user may have open at once (too_many_watchers beyond it)")
}

// apply copies the caps into cfg.
func (l *limitFlags) apply(cfg *gateway.Config) error {
	if l.sessions < 1 {
		return usageErrorf("--max-sessions-per-user %d: want at least 1", l.sessions)
	}
	if l.watchers < 1 {
		return usageErrorf("--max-watchers-per-user %d: want at least 1", l.watchers)
	}
	cfg.MaxSessionsPerUser, cfg.MaxWatchersPerUser = l.sessions, l.watchers
	return nil
}

// webhookFlags are the gateway's webhook delivery flags: the outbound guard (what endpoint
// URLs may name), the attempt timeout, the retry period and schedule, and the event log's
// retention.
type webhookFlags struct {
	allowPrivate, allowHTTP             bool
	timeout, retryFor, backoffMin, back time.Duration
	retention                           time.Duration
}

func (w *webhookFlags) register(fs *flag.FlagSet, d gateway.Config) {
	fs.BoolVar(&w.allowPrivate, "webhook-allow-private", false, "let webhook endpoints be at private, loopback and link-local addresses (development and tests; by default only public addresses are reached, checked at registration and on every connection and redirect)")
	fs.BoolVar(&w.allowHTTP, "webhook-allow-http", false, "let webhook endpoints be plain http:// URLs (development and tests; by default https only)")
	fs.DurationVar(&w.timeout, "webhook-timeout", d.WebhookTimeout, "bound of one webhook attempt: connecting, TLS, the request, redirects and reading the answer")
	fs.DurationVar(&w.retryFor, "webhook-retry-for", d.WebhookRetryFor, "how long a webhook delivery is retried after its first attempt before it fails for good")
	fs.DurationVar(&w.backoffMin, "webhook-backoff-min", d.WebhookBackoffMin, "tuning: the wait after a webhook delivery's first failed attempt; it doubles with each failure, with jitter")
	fs.DurationVar(&w.back, "webhook-backoff-max", d.WebhookBackoffMax, "tuning: the longest wait between two attempts of a webhook delivery")
	fs.DurationVar(&w.retention, "event-retention", d.EventRetention, "how long events, and webhook deliveries that ended, are kept (0 keeps them forever); events not yet fanned out to webhooks are kept")
}

// apply copies the flags into cfg.
func (w *webhookFlags) apply(cfg *gateway.Config) error {
	for name, d := range map[string]time.Duration{"--webhook-timeout": w.timeout, "--webhook-retry-for": w.retryFor,
		"--webhook-backoff-min": w.backoffMin, "--webhook-backoff-max": w.back} {
		if d <= 0 {
			return usageErrorf("%s %s: want a positive duration", name, d)
		}
	}
	if w.back < w.backoffMin {
		return usageErrorf("--webhook-backoff-max %s: less than --webhook-backoff-min %s", w.back, w.backoffMin)
	}
	if w.retention < 0 {
		return usageErrorf("--event-retention %s: want a positive duration, or 0 to keep events forever", w.retention)
	}
	cfg.WebhookAllowPrivate, cfg.WebhookAllowHTTP = w.allowPrivate, w.allowHTTP
	cfg.WebhookTimeout, cfg.WebhookRetryFor = w.timeout, w.retryFor
	cfg.WebhookBackoffMin, cfg.WebhookBackoffMax = w.backoffMin, w.back
	cfg.EventRetention = w.retention
	return nil
}

// metricsFlag is a server's --metrics-listen: the address of its operations listener, which
// serves Prometheus metrics at /metrics (nothing of the API), over plain HTTP unless
// --metrics-cert and --metrics-key ask for TLS; --metrics-client-ca then also requires the
// scraper's certificate. Empty address: off.
type metricsFlag struct {
	addr, cert, key, clientCA string
}

func (m *metricsFlag) register(fs *flag.FlagSet) {
	fs.StringVar(&m.addr, "metrics-listen", "", "address of the operations listener serving Prometheus metrics at http://ADDR/metrics (plain HTTP unless --metrics-cert is given; no API); empty disables it")
	fs.StringVar(&m.cert, "metrics-cert", "", "certificate (PEM) of the operations listener: serve https://ADDR/metrics (with --metrics-key)")
	fs.StringVar(&m.key, "metrics-key", "", "private key (PEM) of --metrics-cert")
	fs.StringVar(&m.clientCA, "metrics-client-ca", "", "CA certificate (PEM): the HTTPS operations listener admits only scrapers presenting a certificate it signed")
}

// tlsConfig is the operations listener's TLS configuration, or nil for plain HTTP.
func (m *metricsFlag) tlsConfig() (*tls.Config, error) {
	if m.cert == "" && m.key == "" {
		if m.clientCA != "" {
			return nil, usageErrorf("--metrics-client-ca needs --metrics-cert and --metrics-key")
		}
		return nil, nil
	}
	if m.cert == "" || m.key == "" {
		return nil, usageErrorf("--metrics-cert and --metrics-key go together")
	}
	pair, err := tls.LoadX509KeyPair(m.cert, m.key)
	if err != nil {
		return nil, fmt.Errorf("--metrics-cert %s, --metrics-key %s: %w", m.cert, m.key, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if m.clientCA != "" {
		pem, err := os.ReadFile(m.clientCA)
		if err != nil {
			return nil, fmt.Errorf("--metrics-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--metrics-client-ca %s: no PEM certificate in it", m.clientCA)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// start returns the process's registry and starts its listener, or returns nils when
// --metrics-listen is empty. The caller shuts the listener down after the server.
func (m *metricsFlag) start(log *slog.Logger) (*prometheus.Registry, *metrics.Server, error) {
	if m.addr == "" {
		if m.cert != "" || m.key != "" || m.clientCA != "" {
			return nil, nil, usageErrorf("--metrics-cert, --metrics-key and --metrics-client-ca need --metrics-listen")
		}
		return nil, nil, nil
	}
	if _, _, err := net.SplitHostPort(m.addr); err != nil {
		return nil, nil, usageErrorf("--metrics-listen %q: want HOST:PORT", m.addr)
	}
	tlsCfg, err := m.tlsConfig()
	if err != nil {
		return nil, nil, err
	}
	reg := metrics.NewRegistry()
	srv, err := metrics.ListenTLS(m.addr, reg, log, tlsCfg)
	if err != nil {
		return nil, nil, err
	}
	return reg, srv, nil
}

// stopMetrics shuts the operations listener down, if any, joining its error to err.
func stopMetrics(srv *metrics.Server, err error) error {
	if srv == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return errors.Join(err, srv.Shutdown(ctx))
}
