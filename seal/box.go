package seal

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/hkdf"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/internal/pb"
)

// MaxItem bounds an encoded SealedItem: the largest envelope plus the
// sealed-sender overhead.
const MaxItem = MaxEnvelope + 256

const boxInfo = "parley/sealed-sender/v1"

// ErrNotBoxedForMe means a sealed item does not open with our key.
var ErrNotBoxedForMe = errors.New("seal: item is not sealed for this identity")

// Box seals an envelope once more for its recipient alone, with a fresh
// ephemeral X25519 key (sealed sender): whoever holds the result learns
// only who it is for, its size, and when it was handed over.
func Box(env *pb.Envelope, to peer.ID) ([]byte, error) {
	pub, err := identity.X25519Public(to)
	if err != nil {
		return nil, err
	}
	var eph [32]byte
	if _, err := rand.Read(eph[:]); err != nil {
		return nil, err
	}
	ephPub, err := curve25519.X25519(eph[:], curve25519.Basepoint)
	if err != nil {
		return nil, err
	}
	aead, err := boxAEAD(eph[:], pub[:], ephPub, pub[:])
	if err != nil {
		return nil, err
	}
	plain, err := proto.Marshal(env)
	if err != nil {
		return nil, err
	}
	item := &pb.SealedItem{Ephemeral: ephPub, Nonce: make([]byte, chacha20poly1305.NonceSizeX)}
	if _, err := rand.Read(item.Nonce); err != nil {
		return nil, err
	}
	item.Ciphertext = aead.Seal(nil, item.Nonce, plain, item.Ephemeral)
	return proto.Marshal(item)
}

// Unbox opens an item sealed for this keyring's owner and returns the
// envelope inside, still sealed by its sender: Open authenticates it.
func (k *Keyring) Unbox(data []byte) (*pb.Envelope, error) {
	if len(data) > MaxItem {
		return nil, ErrTooLarge
	}
	var item pb.SealedItem
	if err := proto.Unmarshal(data, &item); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(item.Ephemeral) != 32 || len(item.Nonce) != chacha20poly1305.NonceSizeX {
		return nil, fmt.Errorf("%w: bad sealed item header", ErrMalformed)
	}
	myPub, err := identity.X25519Public(k.self)
	if err != nil {
		return nil, err
	}
	aead, err := boxAEAD(k.private[:], item.Ephemeral, item.Ephemeral, myPub[:])
	if err != nil {
		return nil, ErrNotBoxedForMe
	}
	plain, err := aead.Open(nil, item.Nonce, item.Ciphertext, item.Ephemeral)
	if err != nil {
		return nil, ErrNotBoxedForMe
	}
	env := new(pb.Envelope)
	if err := proto.Unmarshal(plain, env); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return env, nil
}

// boxAEAD derives the item key: HKDF-SHA256 over X25519(private, public),
// bound to the ephemeral and the recipient's public keys.
func boxAEAD(private, public, ephPub, recipientPub []byte) (cipher.AEAD, error) {
	shared, err := curve25519.X25519(private, public)
	if err != nil {
		return nil, err
	}
	info := appendField(appendField([]byte(boxInfo), ephPub), recipientPub)
	key := make([]byte, chacha20poly1305.KeySize)
	if _, err := io.ReadFull(hkdf.New(sha256.New, shared, nil, info), key); err != nil {
		return nil, err
	}
	return chacha20poly1305.NewX(key)
}
