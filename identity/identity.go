// Package identity creates and loads a user's Ed25519 key, names the user by
// its libp2p peer ID, and derives the X25519 keys that end-to-end encryption
// uses from the same key pair.
package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"filippo.io/edwards25519"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// KeyFile is the name of the key file inside a Parley home.
const KeyFile = "identity.key"

var (
	// ErrNoIdentity means the home holds no key file yet.
	ErrNoIdentity = errors.New("identity: no identity")
	// ErrExists means Create found a key file already there.
	ErrExists = errors.New("identity: an identity already exists")
	// ErrLowOrder means a public key is a low-order point, which would make
	// every shared secret computed with it predictable.
	ErrLowOrder = errors.New("identity: public key is a low-order point")
	// ErrNotEd25519 means a peer ID does not embed an Ed25519 public key.
	ErrNotEd25519 = errors.New("identity: peer ID does not carry an Ed25519 key")
)

// Identity is a user's key pair and the peer ID it is known by.
type Identity struct {
	key crypto.PrivKey
	id  peer.ID
}

// Generate makes a fresh identity in memory.
func Generate() (*Identity, error) {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generate key: %w", err)
	}
	return FromKey(key)
}

// FromKey wraps an existing Ed25519 private key.
func FromKey(key crypto.PrivKey) (*Identity, error) {
	if key.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("identity: key type %v is not Ed25519", key.Type())
	}
	// The encoding carries seed and public key side by side; a public half
	// that the seed does not produce would give an address whose messages
	// this key cannot open.
	raw, err := key.Raw()
	if err != nil || len(raw) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("identity: Ed25519 key has the wrong size")
	}
	if !bytes.Equal(ed25519.NewKeyFromSeed(raw[:ed25519.SeedSize]), raw) {
		return nil, fmt.Errorf("identity: Ed25519 key's public half does not match its seed")
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("identity: peer ID: %w", err)
	}
	return &Identity{key: key, id: id}, nil
}

// ID is the user's address.
func (i *Identity) ID() peer.ID { return i.id }

// PrivKey is the Ed25519 private key, for the libp2p host.
func (i *Identity) PrivKey() crypto.PrivKey { return i.key }

// Create writes a new identity to home/identity.key with mode 0600. It
// refuses to overwrite an existing key: losing a key loses the address.
func Create(home string) (*Identity, error) {
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("identity: create home %s: %w", home, err)
	}
	path := filepath.Join(home, KeyFile)
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("%w at %s", ErrExists, path)
	}
	id, err := Generate()
	if err != nil {
		return nil, err
	}
	raw, err := crypto.MarshalPrivateKey(id.key)
	if err != nil {
		return nil, fmt.Errorf("identity: encode key: %w", err)
	}
	// Write to a temporary file and rename, so a crash never leaves a
	// half-written key behind.
	tmp, err := os.CreateTemp(home, ".identity-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("identity: %w", err)
	}
	if _, err := tmp.Write(raw); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("identity: write key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("identity: write key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("identity: write key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%w at %s", ErrExists, path)
		}
		return nil, fmt.Errorf("identity: %w", err)
	}
	return id, nil
}

// Load reads home/identity.key. It refuses a key file that group or others
// can read, because anyone who reads it can impersonate the user.
func Load(home string) (*Identity, error) {
	path := filepath.Join(home, KeyFile)
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s: run 'parley init --home %s' first", ErrNoIdentity, home, home)
	}
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("identity: key file %s has mode %#o and is readable by others; run 'chmod 600 %s'", path, perm, path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	id, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("identity: key file %s is corrupt (%v); restore it from a backup or move it away and run 'parley init' for a new identity", path, err)
	}
	return id, nil
}

// Parse decodes the contents of a key file: a libp2p private key in its
// protobuf encoding, which must be Ed25519.
func Parse(raw []byte) (*Identity, error) {
	if len(raw) > 1024 {
		return nil, fmt.Errorf("identity: key of %d bytes is too long", len(raw))
	}
	key, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return FromKey(key)
}

// X25519Private is the X25519 private key derived from the Ed25519 seed:
// the first half of SHA-512(seed), clamped (RFC 8032 §5.1.5, RFC 7748 §5).
func (i *Identity) X25519Private() [32]byte {
	raw, err := i.key.Raw() // seed || public key
	if err != nil || len(raw) < 32 {
		panic("identity: Ed25519 key without a seed") // impossible for keys built by FromKey
	}
	h := sha512.Sum512(raw[:32])
	var out [32]byte
	copy(out[:], h[:32])
	out[0] &= 248
	out[31] &= 127
	out[31] |= 64
	return out
}

// X25519Public derives the X25519 public key of a peer from its peer ID:
// the Edwards point mapped to its Montgomery u-coordinate. Low-order points
// are rejected.
func X25519Public(id peer.ID) ([32]byte, error) {
	var out [32]byte
	pub, err := id.ExtractPublicKey()
	if err != nil {
		return out, fmt.Errorf("%w: %v", ErrNotEd25519, err)
	}
	if pub.Type() != crypto.Ed25519 {
		return out, ErrNotEd25519
	}
	raw, err := pub.Raw()
	if err != nil {
		return out, fmt.Errorf("identity: %w", err)
	}
	return x25519FromEd25519(raw)
}

func x25519FromEd25519(raw []byte) ([32]byte, error) {
	var out [32]byte
	p, err := new(edwards25519.Point).SetBytes(raw)
	if err != nil {
		return out, fmt.Errorf("identity: invalid Ed25519 public key: %w", err)
	}
	// A point of small order becomes the identity when multiplied by the
	// cofactor 8.
	if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return out, ErrLowOrder
	}
	copy(out[:], p.BytesMontgomery())
	return out, nil
}
