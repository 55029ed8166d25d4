package seal

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"io"
	"sort"
	"testing"

	"filippo.io/edwards25519"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/hkdf"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/internal/pb"
)

// TestSpecInterop opens an envelope the way docs/protocol.md §3–§4 tells an
// independent implementation to, using none of this package's helpers.
func TestSpecInterop(t *testing.T) {
	alice, bob := pair(t)
	env, err := NewKeyring(alice).Seal(msg(alice.ID(), bob.ID(), "by the book"))
	if err != nil {
		t.Fatal(err)
	}
	wire, _ := proto.Marshal(env)

	// §3: bob's X25519 private key from his seed, alice's public key from her ID.
	raw, _ := bob.PrivKey().Raw()
	h := sha512.Sum512(raw[:32])
	priv := h[:32]
	priv[0] &= 248
	priv[31] &= 127
	priv[31] |= 64
	apub, _ := alice.ID().ExtractPublicKey()
	araw, _ := apub.Raw()
	point, err := new(edwards25519.Point).SetBytes(araw)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := curve25519.X25519(priv, point.BytesMontgomery())
	if err != nil {
		t.Fatal(err)
	}
	// §4.1: HKDF with the two IDs in byte order.
	ids := []string{string(alice.ID()), string(bob.ID())}
	sort.Strings(ids)
	info := []byte("parley/pairwise/v1")
	for _, id := range ids {
		info = binary.AppendUvarint(info, uint64(len(id)))
		info = append(info, id...)
	}
	key := make([]byte, 32)
	io.ReadFull(hkdf.New(sha256.New, shared, nil, info), key)
	// §4.3: the associated data and the AEAD.
	var got pb.Envelope
	if err := proto.Unmarshal(wire, &got); err != nil {
		t.Fatal(err)
	}
	ad := []byte("parley/msg/v1")
	for _, f := range [][]byte{got.Id, got.From, got.To} {
		ad = binary.AppendUvarint(ad, uint64(len(f)))
		ad = append(ad, f...)
	}
	aead, _ := chacha20poly1305.NewX(key)
	plain, err := aead.Open(nil, got.Nonce, got.Ciphertext, ad)
	if err != nil {
		t.Fatalf("the envelope does not open as docs/protocol.md describes: %v", err)
	}
	var m pb.Message
	if err := proto.Unmarshal(plain, &m); err != nil || string(m.Body) != "by the book" {
		t.Fatalf("message %v, %v", &m, err)
	}
}
