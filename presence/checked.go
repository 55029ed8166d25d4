package presence

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// Checked remembers the records whose signatures checked out, so that a
// record met again costs a hash instead of an Ed25519 verification (about
// 50 µs). One record is checked many times: each DHT server when it is
// stored and each time it is read, the resolver for every answer and again
// when it picks the best, the watcher when it comes in a NOTIFY. Only
// good signatures are remembered, so a bad one is rejected by the real
// check every time. It is bounded; the oldest entry goes first. A nil
// *Checked remembers nothing.
type Checked struct {
	mu    sync.Mutex
	seen  map[[sha256.Size]byte]struct{}
	order [][sha256.Size]byte // a ring: next is overwritten first
	next  int
}

// NewChecked returns a Checked that remembers up to n signatures.
func NewChecked(n int) *Checked {
	return &Checked{seen: make(map[[sha256.Size]byte]struct{}, n), order: make([][sha256.Size]byte, 0, n)}
}

// verify reports whether sig is pub's signature of msg. msg names the
// signer (signingBytes holds the peer ID, whose key pub is), so the digest
// of msg and sig stands for the whole check.
func (c *Checked) verify(pub crypto.PubKey, msg, sig []byte) bool {
	if c == nil {
		ok, err := pub.Verify(msg, sig)
		return err == nil && ok
	}
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(msg)))])
	h.Write(msg)
	h.Write(sig)
	var d [sha256.Size]byte
	h.Sum(d[:0])
	c.mu.Lock()
	_, ok := c.seen[d]
	c.mu.Unlock()
	if ok {
		return true
	}
	if ok, err := pub.Verify(msg, sig); err != nil || !ok {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[d]; ok {
		return true
	}
	if len(c.order) < cap(c.order) {
		c.order = append(c.order, d)
	} else if len(c.order) > 0 {
		delete(c.seen, c.order[c.next])
		c.order[c.next] = d
		c.next = (c.next + 1) % len(c.order)
	} else {
		return true // n = 0: remembers nothing
	}
	c.seen[d] = struct{}{}
	return true
}
