// Package presence lets contacts see whether a user is online, away or busy,
// and only the contacts the user allows. It owns the signed presence record
// and its DHT validator (pure), the visibility policy (pure), the publisher
// that keeps the record fresh in the DHT, the resolver, and the
// SUBSCRIBE/NOTIFY protocol that pushes changes to watchers.
package presence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/internal/pb"
)

const (
	// Namespace is the DHT namespace of presence records.
	Namespace = "presence"
	// MaxRecordSize bounds an encoded record.
	MaxRecordSize = 4096
	// ClockSkew is how far clocks may disagree about a record's expiry.
	ClockSkew = 2 * time.Minute
	// MaxLifetime bounds how far in the future a record may expire, so that
	// nobody can plant a record that outlives the user's next change by days.
	MaxLifetime = 24 * time.Hour
	// KeyIDSize is the size of a presence key's id.
	KeyIDSize = 8

	signDomain = "parley/presence/v1"
)

var (
	// ErrInvalid means a record breaks the format or the rules.
	ErrInvalid = errors.New("presence: invalid record")
	// ErrExpired means a record's lifetime is over.
	ErrExpired = errors.New("presence: record expired")
	// ErrBadSignature means a record is not signed by its peer.
	ErrBadSignature = errors.New("presence: bad signature")
	// ErrNoKey means a record is sealed with a key this node does not hold:
	// to this node the user looks offline.
	ErrNoKey = errors.New("presence: record sealed with a key we do not hold")

	errProtocol = errors.New("presence: protocol violation")
	// errUnwatched: the connection of a SUBSCRIBE closed before its answer
	// was taken in.
	errUnwatched = errors.New("presence: the subscription's connection closed")
)

// Key is the DHT key of p's record: /presence/ followed by the binary peer ID.
func Key(p peer.ID) string { return "/" + Namespace + "/" + string(p) }

// Sign fills rec.Signature with priv's signature over the canonical encoding.
func Sign(rec *pb.PresenceRecord, priv crypto.PrivKey) error {
	sig, err := priv.Sign(signingBytes(rec))
	if err != nil {
		return fmt.Errorf("presence: sign: %w", err)
	}
	rec.Signature = sig
	return nil
}

// signingBytes is the canonical, domain-separated encoding of every field
// but the signature (protobuf encoding is not canonical, so it is not used).
func signingBytes(rec *pb.PresenceRecord) []byte {
	b := make([]byte, 0, 64+len(rec.PeerId)+len(rec.Body)+len(rec.KeyId))
	b = append(b, signDomain...)
	b = appendField(b, rec.PeerId)
	b = binary.BigEndian.AppendUint64(b, rec.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(rec.ExpiresAt))
	if rec.Sealed {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = appendField(b, rec.KeyId)
	return appendField(b, rec.Body)
}

func appendField(dst, f []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(f)))
	return append(dst, f...)
}

// Parse decodes a record without judging it.
func Parse(data []byte) (*pb.PresenceRecord, error) {
	if len(data) > MaxRecordSize {
		return nil, fmt.Errorf("%w: %d bytes, over %d", ErrInvalid, len(data), MaxRecordSize)
	}
	rec := new(pb.PresenceRecord)
	if err := proto.Unmarshal(data, rec); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return rec, nil
}

// Verify checks that rec may be stored under key at time now: the key names
// the record's peer, the peer signed it, and it has not expired. A good
// signature is remembered; a nil c checks every time.
func (c *Checked) Verify(key string, rec *pb.PresenceRecord, now time.Time) error {
	p, err := peer.IDFromBytes(rec.PeerId)
	if err != nil {
		return fmt.Errorf("%w: peer ID: %v", ErrInvalid, err)
	}
	if key != Key(p) {
		return fmt.Errorf("%w: stored under another key than its peer's", ErrInvalid)
	}
	if rec.Sealed && len(rec.KeyId) != KeyIDSize {
		return fmt.Errorf("%w: sealed without a key id", ErrInvalid)
	}
	exp := time.UnixMilli(rec.ExpiresAt)
	if now.After(exp.Add(ClockSkew)) {
		return ErrExpired
	}
	if exp.After(now.Add(MaxLifetime + ClockSkew)) {
		return fmt.Errorf("%w: expires more than %v ahead", ErrInvalid, MaxLifetime)
	}
	pub, err := p.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("%w: no public key in peer ID: %v", ErrInvalid, err)
	}
	if !c.verify(pub, signingBytes(rec), rec.Signature) {
		return ErrBadSignature
	}
	return nil
}

// Validator is the DHT's record validator for the presence namespace. Every
// DHT server runs it on every record it is asked to store or returns.
type Validator struct {
	Now func() time.Time
	// Checked, when set, remembers good signatures (see Checked).
	Checked *Checked
}

func (v Validator) now() time.Time {
	if v.Now == nil {
		return time.Now()
	}
	return v.Now()
}

// Validate implements record.Validator.
func (v Validator) Validate(key string, value []byte) error {
	rec, err := Parse(value)
	if err != nil {
		return err
	}
	return v.Checked.Verify(key, rec, v.now())
}

// Select implements record.Validator: the valid record with the highest
// seq wins; on a tie the earliest index, so that republishing the same bytes
// keeps (and refreshes) the stored record.
func (v Validator) Select(key string, values [][]byte) (int, error) {
	best, bestSeq := -1, uint64(0)
	now := v.now()
	for i, val := range values {
		rec, err := Parse(val)
		if err != nil || v.Checked.Verify(key, rec, now) != nil {
			continue
		}
		if best < 0 || rec.Seq > bestSeq {
			best, bestSeq = i, rec.Seq
		}
	}
	if best < 0 {
		return 0, fmt.Errorf("%w: no valid record among %d", ErrInvalid, len(values))
	}
	return best, nil
}
