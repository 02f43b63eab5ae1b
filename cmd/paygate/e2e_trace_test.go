package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/paygate/paygate/client"
	"github.com/paygate/paygate/internal/cluster"
	"github.com/paygate/paygate/internal/tracing"
)

// Procedures as otelconnect names their spans.
const (
	spanExecute = "paygate.gateway.v1.PaymentService/ExecutePayment"
	spanPrepare = "paygate.bank.v1.BankService/PrepareTransaction"
	spanCommit  = "paygate.bank.v1.BankService/CommitTransaction"
	spanAbort   = "paygate.bank.v1.BankService/AbortTransaction"
)

// TestTraceEndToEnd runs a gateway and three banks, the gateway, bank1 and bank2 exporting
// their spans over OTLP/HTTP to a receiver in the test, and makes payments from a Go client
// whose spans the test records itself. One payment is one trace, rooted at the test's span:
// the gateway's admission, prepare (with each bank's prepare, the banks' server and ledger
// spans inside it), decision and phase two, in that order. A failed payment's decision says
// why. bank3 has no OTEL_* variables: it exports nothing, though the trace context reaches it.
func TestTraceEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real processes")
	}
	recv := newOTLPReceiver(t)
	env := []string{
		"OTEL_TRACES_EXPORTER=otlp",
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.url,
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}
	c := cluster.New(t, cluster.Options{Env: map[string][]string{"gateway": env, "bank1": env, "bank2": env}})

	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	cl := c.NewClient(client.WithTracerProvider(tp))
	if _, err := cl.Login(ctxT(t, 10*time.Second), "alice", passwords["alice"]); err != nil {
		t.Fatal(err)
	}

	// The payment that succeeds, bank1 to bank2.
	res, traceID := tracedPay(t, tp, cl, "bank1-1001", "bank2-2002", 100)
	if res.Status != client.StatusSucceeded {
		t.Fatalf("payment: %s (%s)", res.Status, res.Reason)
	}
	spans := recv.await(t, traceID, []want{
		{"gateway", spanExecute}, {"gateway", "admission"}, {"gateway", "prepare"}, {"gateway", "prepare bank1"},
		{"gateway", "prepare bank2"}, {"gateway", "decision"}, {"gateway", "phase_two"},
		{"gateway", "phase_two bank1"}, {"gateway", "phase_two bank2"}, {"gateway", "store.admit"}, {"gateway", "store.decide"},
		{"bank1", spanPrepare}, {"bank1", "ledger.prepare"}, {"bank1", spanCommit}, {"bank1", "ledger.commit"},
		{"bank2", spanPrepare}, {"bank2", "ledger.prepare"}, {"bank2", spanCommit}, {"bank2", "ledger.commit"},
	})
	local := exp.GetSpans()
	checkOneTrace(t, recv, res.ID, traceID)
	checkTree(t, local, spans, traceID)
	t.Logf("the spans of payment %s:\n%s", res.ID, renderTree(local, spans, traceID))

	one := func(process, name string) recvSpan {
		t.Helper()
		var found []recvSpan
		for _, s := range spans {
			if s.process == process && s.span.GetName() == name {
				found = append(found, s)
			}
		}
		if len(found) != 1 {
			t.Fatalf("%d spans %q from %s, want 1", len(found), name, process)
		}
		return found[0]
	}
	admission, prepare, decision, phaseTwo := one("gateway", "admission"), one("gateway", "prepare"), one("gateway", "decision"), one("gateway", "phase_two")
	// The banks prepare while the admission is being synced: admission begins first, and ends
	// (the row is durable) before anything is decided.
	before(t, "admission starts", admission.start(), "prepare starts", prepare.start())
	before(t, "admission ends", admission.end(), "decision starts", decision.start())
	before(t, "prepare ends", prepare.end(), "decision starts", decision.start())
	before(t, "decision ends", decision.end(), "phase two starts", phaseTwo.start())
	for _, bank := range []string{"bank1", "bank2"} {
		p, cm := one(bank, spanPrepare), one(bank, spanCommit)
		before(t, "gateway's prepare starts", prepare.start(), bank+"'s prepare starts", p.start())
		before(t, bank+"'s prepare ends", p.end(), "gateway's prepare ends", prepare.end())
		before(t, "phase two starts", phaseTwo.start(), bank+"'s commit starts", cm.start())
		before(t, bank+"'s commit ends", cm.end(), "phase two ends", phaseTwo.end())
		if got := attr(one("gateway", "prepare "+bank).span, "paygate.outcome"); got != "yes" {
			t.Errorf("prepare %s: paygate.outcome %q, want yes", bank, got)
		}
	}
	if got := attr(decision.span, "paygate.outcome"); got != "commit" {
		t.Errorf("decision: paygate.outcome %q, want commit", got)
	}
	// The call's log lines carry the trace id, at the gateway and at the banks that trust it.
	for _, name := range []string{"gateway", "bank1", "bank2"} {
		if lines := c.GrepLog(name, `"trace_id":"`+traceID.String()+`"`); len(lines) == 0 {
			t.Errorf("no log line of %s carries trace_id %s", name, traceID)
		}
	}

	// A payment that fails: more than the payer has. Its decision says why.
	failed, failedTrace := tracedPay(t, tp, cl, "bank1-1001", "bank2-2002", 1_000_000_000_00)
	if failed.Status != client.StatusFailed || failed.Reason != "insufficient_funds" {
		t.Fatalf("payment of too much: %s (%s), want failed (insufficient_funds)", failed.Status, failed.Reason)
	}
	fspans := recv.await(t, failedTrace, []want{{"gateway", "decision"}, {"gateway", "prepare bank1"},
		{"gateway", "phase_two bank1"}, {"gateway", "phase_two bank2"}, {"bank1", spanPrepare}, {"bank1", spanAbort}, {"bank2", spanAbort}})
	checkOneTrace(t, recv, failed.ID, failedTrace)
	checkTree(t, exp.GetSpans(), fspans, failedTrace)
	for _, s := range fspans {
		switch s.span.GetName() {
		case "decision":
			if o, r := attr(s.span, "paygate.outcome"), attr(s.span, "paygate.reason"); o != "abort" || r != "FAILURE_REASON_INSUFFICIENT_FUNDS" {
				t.Errorf("failed payment's decision: outcome %q reason %q, want abort FAILURE_REASON_INSUFFICIENT_FUNDS", o, r)
			}
		case "prepare bank1":
			if o := attr(s.span, "paygate.outcome"); o != "no" {
				t.Errorf("failed payment's prepare bank1: outcome %q, want no", o)
			}
		}
	}

	// bank3 has tracing off: the gateway's side of a payment to it is traced, bank3 sends
	// nothing.
	third, thirdTrace := tracedPay(t, tp, cl, "bank1-1001", "bank3-3001", 100)
	if third.Status != client.StatusSucceeded {
		t.Fatalf("payment to bank3: %s (%s)", third.Status, third.Reason)
	}
	recv.await(t, thirdTrace, []want{{"gateway", "phase_two bank3"}, {"bank1", spanCommit}})
	for _, s := range recv.all() {
		if s.process == "bank3" {
			t.Fatalf("bank3, without OTEL_* variables, exported span %q", s.span.GetName())
		}
	}

	// No span carries the user's name, password or token.
	secrets := []string{"alice", passwords["alice"], cl.Token()}
	for _, s := range recv.all() {
		for _, kv := range s.span.GetAttributes() {
			v := kv.GetValue().GetStringValue()
			for _, secret := range secrets {
				if secret != "" && strings.Contains(v, secret) {
					t.Errorf("span %q of %s: attribute %s carries a secret", s.span.GetName(), s.process, kv.GetKey())
				}
			}
		}
	}
}

// tracedPay pays under a root span of the test's own and returns the result and the trace id.
func tracedPay(t *testing.T, tp trace.TracerProvider, cl *client.Client, from, to string, amount int64) (client.Result, trace.TraceID) {
	t.Helper()
	ctx, root := tp.Tracer("paygate-test").Start(ctxT(t, 15*time.Second), "test payment")
	res, err := cl.Pay(ctx, client.PaymentRequest{From: from, To: to, Amount: amount, Currency: "USD"})
	root.End()
	if err != nil {
		t.Fatalf("pay %s to %s: %v", from, to, err)
	}
	return res, root.SpanContext().TraceID()
}

// before fails the test unless a is at or before b.
func before(t *testing.T, aName string, a time.Time, bName string, b time.Time) {
	t.Helper()
	if a.After(b) {
		t.Errorf("%s (%s) after %s (%s)", aName, a.Format(time.StampMicro), bName, b.Format(time.StampMicro))
	}
}

// checkOneTrace fails the test unless every span received that names payment id (in
// paygate.payment_id) belongs to trace id.
func checkOneTrace(t *testing.T, recv *otlpReceiver, id string, traceID trace.TraceID) {
	t.Helper()
	n := 0
	for _, s := range recv.all() {
		if attr(s.span, "paygate.payment_id") != id {
			continue
		}
		n++
		if got := hex.EncodeToString(s.span.GetTraceId()); got != traceID.String() {
			t.Errorf("span %q of %s names payment %s but is in trace %s, want %s", s.span.GetName(), s.process, id, got, traceID)
		}
	}
	if n == 0 {
		t.Errorf("no span names payment %s", id)
	}
}

// node is a span of the tree: the test's own (local) or one received.
type node struct {
	id, parent string
	name       string
	process    string
	start      time.Time
	note       string
}

// nodes merges the test's spans and the received ones of one trace.
func nodes(local tracetest.SpanStubs, received []recvSpan, traceID trace.TraceID) []node {
	var out []node
	for _, s := range local {
		if s.SpanContext.TraceID() != traceID {
			continue
		}
		n := node{id: s.SpanContext.SpanID().String(), name: s.Name, process: "test", start: s.StartTime}
		if s.Parent.IsValid() {
			n.parent = s.Parent.SpanID().String()
		}
		out = append(out, n)
	}
	for _, s := range received {
		n := node{id: hex.EncodeToString(s.span.GetSpanId()), parent: hex.EncodeToString(s.span.GetParentSpanId()),
			name: s.span.GetName(), process: s.process, start: s.start()}
		for _, k := range []string{"paygate.outcome", "paygate.reason"} {
			if v := attr(s.span, k); v != "" {
				n.note += " " + k + "=" + v
			}
		}
		out = append(out, n)
	}
	return out
}

// checkTree fails the test unless the spans of the trace form one tree rooted at the test's
// span: exactly one span without a parent, the test's, and every other one's parent among them.
func checkTree(t *testing.T, local tracetest.SpanStubs, received []recvSpan, traceID trace.TraceID) {
	t.Helper()
	all := nodes(local, received, traceID)
	ids := map[string]bool{}
	for _, n := range all {
		ids[n.id] = true
	}
	roots := 0
	for _, n := range all {
		switch {
		case n.parent == "":
			roots++
			if n.process != "test" {
				t.Errorf("span %q of %s starts a tree of its own", n.name, n.process)
			}
		case !ids[n.parent]:
			t.Errorf("span %q of %s has parent %s, which is not in the trace", n.name, n.process, n.parent)
		}
	}
	if roots != 1 {
		t.Errorf("trace %s has %d roots, want 1 (the test's span)", traceID, roots)
	}
}

// renderTree prints the trace as an indented tree, children by start time.
func renderTree(local tracetest.SpanStubs, received []recvSpan, traceID trace.TraceID) string {
	all := nodes(local, received, traceID)
	children := map[string][]node{}
	for _, n := range all {
		children[n.parent] = append(children[n.parent], n)
	}
	var b strings.Builder
	var walk func(parent string, depth int)
	walk = func(parent string, depth int) {
		kids := children[parent]
		slices.SortStableFunc(kids, func(a, b node) int { return a.start.Compare(b.start) })
		for _, n := range kids {
			fmt.Fprintf(&b, "%s%s  [%s]%s\n", strings.Repeat("  ", depth), n.name, n.process, n.note)
			walk(n.id, depth+1)
		}
	}
	walk("", 0)
	return b.String()
}

// attr returns the string attribute key of s, or "".
func attr(s *tracepb.Span, key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			return anyValue(kv.GetValue())
		}
	}
	return ""
}

func anyValue(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	}
	return ""
}

// recvSpan is a span the receiver got, with the process that sent it: "gateway", or the bank's
// name (its resource's paygate.bank).
type recvSpan struct {
	process string
	span    *tracepb.Span
}

func (s recvSpan) start() time.Time { return time.Unix(0, int64(s.span.GetStartTimeUnixNano())) }
func (s recvSpan) end() time.Time   { return time.Unix(0, int64(s.span.GetEndTimeUnixNano())) }

// otlpReceiver is an OTLP/HTTP trace receiver on 127.0.0.1: it keeps every span it is sent.
type otlpReceiver struct {
	url string

	mu    sync.Mutex
	spans []recvSpan
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.export)
	srv := httptest.NewServer(mux) // 127.0.0.1, a port of its own
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

func (r *otlpReceiver) export(w http.ResponseWriter, req *http.Request) {
	var body io.Reader = http.MaxBytesReader(w, req.Body, 16<<20)
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	for _, rs := range msg.GetResourceSpans() {
		process := "?"
		for _, kv := range rs.GetResource().GetAttributes() {
			switch {
			case kv.GetKey() == "service.name" && kv.GetValue().GetStringValue() == tracing.ServiceGateway && process == "?":
				process = "gateway"
			case kv.GetKey() == string(tracing.AttrBank):
				process = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, recvSpan{process: process, span: s})
			}
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// all returns every span received so far.
func (r *otlpReceiver) all() []recvSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.spans)
}

// want is a span expected from a process.
type want struct{ process, name string }

// await waits (up to 15 s) until the receiver holds every wanted span of trace traceID, then
// returns the trace's spans received.
func (r *otlpReceiver) await(t *testing.T, traceID trace.TraceID, wants []want) []recvSpan {
	t.Helper()
	tid := traceID[:]
	deadline := time.Now().Add(15 * time.Second)
	for {
		var spans []recvSpan
		have := map[want]bool{}
		for _, s := range r.all() {
			if bytes.Equal(s.span.GetTraceId(), tid) {
				spans = append(spans, s)
				have[want{s.process, s.span.GetName()}] = true
			}
		}
		var missing []want
		for _, w := range wants {
			if !have[w] {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			// The last batches may still be on their way: the spans wanted end last, but
			// give the exporters one more interval.
			time.Sleep(300 * time.Millisecond)
			return r.trace(tid)
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 15s, trace %s lacks %v; it has %d spans", traceID, missing, len(spans))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// trace returns the spans received of trace tid.
func (r *otlpReceiver) trace(tid []byte) []recvSpan {
	var out []recvSpan
	for _, s := range r.all() {
		if bytes.Equal(s.span.GetTraceId(), tid) {
			out = append(out, s)
		}
	}
	return out
}
