package presence

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/internal/pb"
)

const bodyDomain = "parley/presence-body/v1"

// PresenceKey is a symmetric key that opens a user's sealed records. The
// user shares it with the contacts allowed to see them and replaces it when
// one of them is revoked.
type PresenceKey struct {
	ID  []byte `json:"id"`  // KeyIDSize bytes: SHA-256 of the key, truncated
	Key []byte `json:"key"` // 32 bytes
}

// NewPresenceKey makes a fresh random key.
func NewPresenceKey() PresenceKey {
	k := make([]byte, chacha20poly1305.KeySize)
	if _, err := rand.Read(k); err != nil {
		panic(err)
	}
	id := sha256.Sum256(k)
	return PresenceKey{ID: id[:KeyIDSize], Key: k}
}

// Valid reports whether k has the right shape.
func (k PresenceKey) Valid() bool {
	return len(k.ID) == KeyIDSize && len(k.Key) == chacha20poly1305.KeySize
}

// bodyAD binds a sealed body to its record, so it cannot be moved into
// another peer's record or another sequence number.
func bodyAD(rec *pb.PresenceRecord) []byte {
	ad := appendField([]byte(bodyDomain), rec.PeerId)
	ad = binary.BigEndian.AppendUint64(ad, rec.Seq)
	return appendField(ad, rec.KeyId)
}

// SetBody puts body into rec, sealed under key when key is non-nil.
func SetBody(rec *pb.PresenceRecord, body *pb.PresenceBody, key *PresenceKey) error {
	plain, err := proto.Marshal(body)
	if err != nil {
		return err
	}
	if key == nil {
		rec.Body, rec.Sealed, rec.KeyId = plain, false, nil
		return nil
	}
	aead, err := chacha20poly1305.NewX(key.Key)
	if err != nil {
		return err
	}
	rec.Sealed, rec.KeyId = true, key.ID
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	rec.Body = aead.Seal(nonce, nonce, plain, bodyAD(rec))
	return nil
}

// OpenBody returns rec's body, opening it with key if it is sealed. A
// sealed body whose key is unknown (key nil or another id) gives ErrNoKey.
func OpenBody(rec *pb.PresenceRecord, key *PresenceKey) (*pb.PresenceBody, error) {
	plain := rec.Body
	if rec.Sealed {
		if key == nil || string(key.ID) != string(rec.KeyId) {
			return nil, ErrNoKey
		}
		aead, err := chacha20poly1305.NewX(key.Key)
		if err != nil {
			return nil, err
		}
		if len(rec.Body) < chacha20poly1305.NonceSizeX {
			return nil, fmt.Errorf("%w: sealed body too short", ErrInvalid)
		}
		nonce, ct := rec.Body[:chacha20poly1305.NonceSizeX], rec.Body[chacha20poly1305.NonceSizeX:]
		if plain, err = aead.Open(nil, nonce, ct, bodyAD(rec)); err != nil {
			return nil, fmt.Errorf("%w: sealed body does not open", ErrInvalid)
		}
	}
	body := new(pb.PresenceBody)
	if err := proto.Unmarshal(plain, body); err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrInvalid, err)
	}
	return body, nil
}
