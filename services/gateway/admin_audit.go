package gateway

import (
	"context"
	"encoding/hex"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	gatewayv1 "github.com/paygate/paygate/gen/paygate/gateway/v1"
)

// AdminService: the audit log.

// auditTarget is the target of the audit log's own procedures.
const auditTarget = "audit"

// auditPageToken is where a page of ListAuditLog ends, with the filter it was made for.
type auditPageToken struct {
	Before int64  `json:"b"`
	Actor  string `json:"a"`
}

func auditEntryProto(r auditRecord) *gatewayv1.AuditEntry {
	return &gatewayv1.AuditEntry{
		Seq:              r.Seq,
		Time:             timestamppb.New(r.At),
		Actor:            r.Actor,
		ActorCertificate: r.ActorCert,
		Peer:             r.Peer,
		Action:           r.Action,
		Target:           r.Target,
		Outcome:          r.Outcome,
		Reason:           r.Reason,
		RequestId:        r.RequestID,
		Before:           r.Before,
		After:            r.After,
		PrevHash:         hex.EncodeToString(r.PrevHash),
		Hash:             hex.EncodeToString(r.Hash),
	}
}

// ListAuditLog implements AdminService.ListAuditLog.
func (a *adminService) ListAuditLog(ctx context.Context, req *connect.Request[gatewayv1.ListAuditLogRequest]) (*connect.Response[gatewayv1.ListAuditLogResponse], error) {
	resp, err := a.listAuditLog(ctx, req.Msg)
	if err := a.audited(ctx, req, "ListAuditLog", auditTarget, nil, nil, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func (a *adminService) listAuditLog(ctx context.Context, m *gatewayv1.ListAuditLogRequest) (*gatewayv1.ListAuditLogResponse, error) {
	size := int(m.GetPageSize())
	if size == 0 {
		size = 50
	}
	var before int64
	if t := m.GetPageToken(); t != "" {
		var tok auditPageToken
		if err := decodePageToken(t, &tok); err != nil {
			return nil, err
		}
		if tok.Before <= 1 || tok.Actor != m.GetActor() {
			return nil, invalidPageToken()
		}
		before = tok.Before
	}
	list, err := a.g.store.ListAudit(ctx, m.GetActor(), before, size+1)
	if err != nil {
		return nil, err
	}
	resp := &gatewayv1.ListAuditLogResponse{}
	if len(list) > size {
		list = list[:size]
		resp.NextPageToken = encodePageToken(auditPageToken{Before: list[len(list)-1].Seq, Actor: m.GetActor()})
	}
	for _, r := range list {
		resp.Entries = append(resp.Entries, auditEntryProto(r))
	}
	return resp, nil
}

// VerifyAuditLog implements AdminService.VerifyAuditLog. Its own entry is appended after the
// check.
func (a *adminService) VerifyAuditLog(ctx context.Context, req *connect.Request[gatewayv1.VerifyAuditLogRequest]) (*connect.Response[gatewayv1.VerifyAuditLogResponse], error) {
	v, err := verifyAudit(ctx, a.g.store)
	var after any
	if err == nil {
		after = struct {
			OK          bool  `json:"ok"`
			Entries     int64 `json:"entries"`
			FirstBroken int64 `json:"first_broken_seq,omitempty"`
		}{v.OK, v.Entries, v.FirstBroken}
	}
	if err := a.audited(ctx, req, "VerifyAuditLog", auditTarget, nil, after, err); err != nil {
		return nil, err
	}
	return connect.NewResponse(&gatewayv1.VerifyAuditLogResponse{Ok: v.OK, Entries: v.Entries, FirstBrokenSeq: v.FirstBroken, Problem: v.Problem}), nil
}
