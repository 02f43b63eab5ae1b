package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// The audit log is a hash chain: each entry's Hash is SHA-256 over the previous entry's Hash and
// the entry itself (auditHash), so that changing, inserting or deleting an entry anywhere but at
// the end breaks every link after it. verifyAudit walks the chain from the first entry.
// Anyone who can write the database can still rewrite the chain from some entry to the end:
// keep copies of recent hashes elsewhere (AuditEntry.hash) to detect that.

// auditHashDomain starts every hashed entry, so that the hash of an audit entry can never be
// the hash of anything else the gateway hashes.
const auditHashDomain = "paygate audit entry v1"

// auditHash returns the hash of entry r linked to prev, the previous entry's hash (nil for the
// first): SHA-256 over an unambiguous encoding (every variable field preceded by its length) of
// prev, r.Seq, r.At in unix nanoseconds, and r's text fields in the order of auditRecord.
// r.PrevHash and r.Hash are not read.
func auditHash(prev []byte, r auditRecord) []byte {
	h := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	number := func(v int64) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(v))
		h.Write(n[:])
	}
	field([]byte(auditHashDomain))
	field(prev)
	number(r.Seq)
	number(r.At.UnixNano())
	for _, s := range []string{r.Actor, r.ActorCert, r.Peer, r.Action, r.Target, r.Outcome, r.Reason,
		r.RequestID, r.Before, r.After} {
		field([]byte(s))
	}
	return h.Sum(nil)
}

// auditVerification is what verifyAudit found.
type auditVerification struct {
	// OK: every entry's Seq follows the previous one's, its PrevHash is the previous one's
	// Hash, and its Hash is auditHash of it.
	OK bool
	// Entries is how many entries were checked: all of them when OK, else up to and including
	// the first broken one.
	Entries int64
	// FirstBroken is the Seq of the first entry that is wrong (0 when OK), and Problem says
	// what is wrong with it.
	FirstBroken int64
	Problem     string
}

// auditVerifyPage is how many entries verifyAudit reads at a time.
const auditVerifyPage = 1000

// verifyAudit checks s's audit log from its first entry, reading it in pages of
// auditVerifyPage, and reports the first entry whose Seq is not the previous one's plus one
// (the first's must be 1), whose PrevHash is not the previous entry's Hash (nil for the first),
// or whose Hash is not auditHash of the entry. Entries appended while it runs are checked too.
func verifyAudit(ctx context.Context, s adminStore) (auditVerification, error) {
	var v auditVerification
	var seq int64
	var prev []byte
	for {
		page, err := s.ScanAudit(ctx, seq, auditVerifyPage)
		if err != nil {
			return v, fmt.Errorf("gateway: verify the audit log: %w", err)
		}
		for _, r := range page {
			v.Entries++
			problem := ""
			switch {
			case r.Seq != seq+1:
				problem = fmt.Sprintf("seq %d follows seq %d: entries are missing or out of order", r.Seq, seq)
			case !bytes.Equal(r.PrevHash, prev):
				problem = "prev_hash is not the hash of the entry before it"
				if seq == 0 {
					problem = "the first entry's prev_hash is not empty"
				}
			case !bytes.Equal(r.Hash, auditHash(r.PrevHash, r)):
				problem = "hash does not match the entry's contents: the entry was changed"
			}
			if problem != "" {
				v.FirstBroken, v.Problem = r.Seq, problem
				return v, nil
			}
			seq, prev = r.Seq, r.Hash
		}
		if len(page) < auditVerifyPage {
			v.OK = true
			return v, nil
		}
	}
}
