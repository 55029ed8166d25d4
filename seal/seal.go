// Package seal is Parley's end-to-end encryption: a pairwise key per contact,
// derived once from the two users' static keys, and XChaCha20-Poly1305
// sealing of each message under it with both peer IDs bound as associated
// data. It is pure: no I/O, no clocks.
//
// Callers use the Sealer interface, so a forward-secret ratchet can replace
// the static pairwise key later without touching the delivery paths.
package seal

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/hkdf"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/internal/pb"
)

const (
	// IDSize is the size of a message id.
	IDSize = 16
	// MaxBody is the largest message body a node sends or accepts.
	MaxBody = 32 * 1024
	// MaxEnvelope bounds an encoded Envelope: the body plus room for the
	// header fields, nonce and tag.
	MaxEnvelope = MaxBody + 1024

	pairwiseInfo = "parley/pairwise/v1"
	messageAD    = "parley/msg/v1"
)

var (
	// ErrNotForMe means an envelope is addressed to another peer.
	ErrNotForMe = errors.New("seal: message is addressed to someone else")
	// ErrForged means authentication failed: the envelope was tampered
	// with, or not sealed by the peer it claims to come from.
	ErrForged = errors.New("seal: message failed authentication")
	// ErrMalformed means an envelope or its content breaks the format.
	ErrMalformed = errors.New("seal: malformed message")
	// ErrTooLarge means a body is over MaxBody.
	ErrTooLarge = fmt.Errorf("seal: message body is over %d bytes", MaxBody)
)

// Sealer seals messages for their recipient and opens messages sent to us.
type Sealer interface {
	Seal(m *pb.Message) (*pb.Envelope, error)
	Open(env *pb.Envelope) (*pb.Message, error)
}

// Keyring is the Sealer built on static pairwise keys. It caches one AEAD
// per contact, because the X25519 operation costs far more than sealing a
// message does. It is safe for concurrent use.
type Keyring struct {
	self    peer.ID
	private [32]byte

	mu    sync.Mutex
	aeads map[peer.ID]cipher.AEAD
}

// NewKeyring returns the Sealer of id.
func NewKeyring(id *identity.Identity) *Keyring {
	return &Keyring{self: id.ID(), private: id.X25519Private(), aeads: make(map[peer.ID]cipher.AEAD)}
}

// PairwiseKey derives the key that a and b share: HKDF-SHA256 over
// X25519(own private, their public), with salt empty and info binding both
// peer IDs in byte order, so both ends derive the same key.
func PairwiseKey(private [32]byte, self, other peer.ID) ([32]byte, error) {
	var key [32]byte
	pub, err := identity.X25519Public(other)
	if err != nil {
		return key, err
	}
	shared, err := curve25519.X25519(private[:], pub[:])
	if err != nil { // all-zero output: a low-order point slipped through
		return key, fmt.Errorf("seal: key agreement with %s: %w", other, err)
	}
	lo, hi := []byte(self), []byte(other)
	if string(lo) > string(hi) {
		lo, hi = hi, lo
	}
	info := appendField(appendField([]byte(pairwiseInfo), lo), hi)
	if _, err := io.ReadFull(hkdf.New(sha256.New, shared, nil, info), key[:]); err != nil {
		return key, fmt.Errorf("seal: hkdf: %w", err)
	}
	return key, nil
}

func (k *Keyring) aead(other peer.ID) (cipher.AEAD, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if a, ok := k.aeads[other]; ok {
		return a, nil
	}
	key, err := PairwiseKey(k.private, k.self, other)
	if err != nil {
		return nil, err
	}
	a, err := chacha20poly1305.NewX(key[:])
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	k.aeads[other] = a
	return a, nil
}

// Seal encrypts m, which must be from this keyring's owner, for m.To.
func (k *Keyring) Seal(m *pb.Message) (*pb.Envelope, error) {
	if peer.ID(m.From) != k.self {
		return nil, fmt.Errorf("%w: sender is not this identity", ErrMalformed)
	}
	if len(m.Id) != IDSize {
		return nil, fmt.Errorf("%w: id is %d bytes, want %d", ErrMalformed, len(m.Id), IDSize)
	}
	if len(m.Body) > MaxBody {
		return nil, ErrTooLarge
	}
	to, err := peer.IDFromBytes(m.To)
	if err != nil {
		return nil, fmt.Errorf("%w: recipient: %v", ErrMalformed, err)
	}
	a, err := k.aead(to)
	if err != nil {
		return nil, err
	}
	plain, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("seal: encode: %w", err)
	}
	env := &pb.Envelope{Id: m.Id, From: m.From, To: m.To, Nonce: make([]byte, chacha20poly1305.NonceSizeX)}
	if _, err := rand.Read(env.Nonce); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	env.Ciphertext = a.Seal(nil, env.Nonce, plain, associatedData(env))
	return env, nil
}

// Open authenticates and decrypts an envelope addressed to this keyring's
// owner, and checks that the sealed message agrees with the envelope.
func (k *Keyring) Open(env *pb.Envelope) (*pb.Message, error) {
	if peer.ID(env.To) != k.self {
		return nil, ErrNotForMe
	}
	if len(env.Id) != IDSize || len(env.Nonce) != chacha20poly1305.NonceSizeX {
		return nil, fmt.Errorf("%w: bad id or nonce size", ErrMalformed)
	}
	if len(env.Ciphertext) > MaxEnvelope {
		return nil, ErrTooLarge
	}
	from, err := peer.IDFromBytes(env.From)
	if err != nil {
		return nil, fmt.Errorf("%w: sender: %v", ErrMalformed, err)
	}
	a, err := k.aead(from)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	plain, err := a.Open(nil, env.Nonce, env.Ciphertext, associatedData(env))
	if err != nil {
		return nil, ErrForged
	}
	m := new(pb.Message)
	if err := proto.Unmarshal(plain, m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if string(m.Id) != string(env.Id) || string(m.From) != string(env.From) || string(m.To) != string(env.To) {
		return nil, fmt.Errorf("%w: sealed header disagrees with envelope", ErrMalformed)
	}
	if len(m.Body) > MaxBody {
		return nil, ErrTooLarge
	}
	return m, nil
}

// associatedData binds the domain, the id and both peer IDs (in sending
// direction, so a message cannot be reflected back to its sender).
func associatedData(env *pb.Envelope) []byte {
	ad := make([]byte, 0, len(messageAD)+3*binary.MaxVarintLen64+len(env.Id)+len(env.From)+len(env.To))
	ad = append(ad, messageAD...)
	ad = appendField(ad, env.Id)
	ad = appendField(ad, env.From)
	return appendField(ad, env.To)
}

// appendField appends b with an unsigned-varint length prefix, so that
// concatenated fields cannot be re-split differently.
func appendField(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// NewID returns a fresh random message id.
func NewID() []byte {
	id := make([]byte, IDSize)
	if _, err := rand.Read(id); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return id
}
