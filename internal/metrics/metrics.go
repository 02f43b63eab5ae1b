// Package metrics exposes a paygate process's Prometheus metrics: one registry per process
// (never the global default), with the Go runtime and process collectors and
// paygate_build_info; an operations listener (plain HTTP, or HTTPS when asked) that serves
// /metrics and nothing of the API; and the server interceptor that counts RPCs per procedure.
//
// Wiring a server:
//
//	reg := metrics.NewRegistry()
//	rpc := metrics.NewRPCInterceptor(reg, slices.Collect(maps.Keys(policy)))
//	srv, _ := rpcserver.New(rpcserver.Config{..., Interceptors: []connect.Interceptor{rpc}})
//	ops, _ := metrics.Listen("127.0.0.1:9100", reg, log)
//	defer ops.Shutdown(ctx)
package metrics

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every paygate metric.
const Namespace = "paygate"

// NewRegistry returns a registry holding the Go runtime and process collectors and the gauge
// paygate_build_info{version,goversion} = 1.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "build_info",
		Help:      "Always 1; its labels say which build of paygate runs.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(Version(), runtime.Version()).Set(1)
	reg.MustRegister(build)
	return reg
}

// Version is the module version of the running binary ("(devel)" when built from a checkout).
func Version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// Server is the operations listener: HTTP (or HTTPS), GET /metrics only.
type Server struct {
	ln   net.Listener
	http *http.Server
	done chan struct{}
}

// Listen serves reg's metrics at http://addr/metrics until Shutdown. Every other path is 404.
func Listen(addr string, reg *prometheus.Registry, log *slog.Logger) (*Server, error) {
	return ListenTLS(addr, reg, log, nil)
}

// ListenTLS is Listen over TLS with tlsCfg (https://addr/metrics); a nil tlsCfg serves plain
// HTTP. A tlsCfg with ClientAuth set admits only scrapers whose certificate it verifies.
func ListenTLS(addr string, reg *prometheus.Registry, log *slog.Logger, tlsCfg *tls.Config) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen %s: %w", addr, err)
	}
	scheme := "http"
	if tlsCfg != nil {
		cfg := tlsCfg.Clone()
		if cfg.MinVersion == 0 {
			cfg.MinVersion = tls.VersionTLS12
		}
		ln = tls.NewListener(ln, cfg)
		scheme = "https"
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		Registry:          reg,
		EnableOpenMetrics: true,
		Timeout:           10 * time.Second,
	}))
	s := &Server{
		ln:   ln,
		done: make(chan struct{}),
		http: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       time.Minute,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", slog.String("addr", ln.Addr().String()), slog.Any("error", err))
		}
	}()
	log.Info("serving metrics", slog.String("addr", ln.Addr().String()), slog.String("url", scheme+"://"+ln.Addr().String()+"/metrics"))
	return s, nil
}

// Addr is the address the listener accepts on (useful with port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Shutdown stops the listener, waiting for scrapes in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		_ = s.http.Close()
	}
	<-s.done
	if err != nil {
		return fmt.Errorf("metrics: shutdown: %w", err)
	}
	return nil
}
