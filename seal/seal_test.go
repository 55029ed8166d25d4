package seal

import (
	"bytes"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/internal/pb"
)

func pair(t testing.TB) (a, b *identity.Identity) {
	t.Helper()
	a, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, err = identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func msg(from, to peer.ID, body string) *pb.Message {
	return &pb.Message{Id: NewID(), From: []byte(from), To: []byte(to), SentAt: 1700000000000, Kind: pb.Kind_KIND_TEXT, Body: []byte(body)}
}

func TestSealOpen(t *testing.T) {
	a, b := pair(t)
	ka, kb := NewKeyring(a), NewKeyring(b)
	m := msg(a.ID(), b.ID(), "hello bob")
	env, err := ka.Seal(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := kb.Open(env)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, m) {
		t.Fatalf("opened %v, sealed %v", got, m)
	}
	// The answer goes the other way under the same pairwise key.
	back, err := kb.Seal(msg(b.ID(), a.ID(), "hi alice"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ka.Open(back); err != nil {
		t.Fatal(err)
	}
}

func TestPairwiseKeySymmetric(t *testing.T) {
	a, b := pair(t)
	k1, err := PairwiseKey(a.X25519Private(), a.ID(), b.ID())
	if err != nil {
		t.Fatal(err)
	}
	k2, err := PairwiseKey(b.X25519Private(), b.ID(), a.ID())
	if err != nil {
		t.Fatal(err)
	}
	if k1 != k2 {
		t.Fatal("the two ends derive different keys")
	}
	c, _ := identity.Generate()
	k3, _ := PairwiseKey(a.X25519Private(), a.ID(), c.ID())
	if k3 == k1 {
		t.Fatal("different contacts share a key")
	}
}

func TestOpenRejects(t *testing.T) {
	a, b := pair(t)
	c, _ := identity.Generate()
	ka, kb, kc := NewKeyring(a), NewKeyring(b), NewKeyring(c)
	fresh := func() *pb.Envelope {
		env, err := ka.Seal(msg(a.ID(), b.ID(), "secret"))
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	cases := []struct {
		name   string
		mutate func(*pb.Envelope)
		opener *Keyring
		want   error
	}{
		{"for someone else", func(*pb.Envelope) {}, kc, ErrNotForMe},
		{"ciphertext flipped", func(e *pb.Envelope) { e.Ciphertext[0] ^= 1 }, kb, ErrForged},
		{"tag flipped", func(e *pb.Envelope) { e.Ciphertext[len(e.Ciphertext)-1] ^= 1 }, kb, ErrForged},
		{"nonce changed", func(e *pb.Envelope) { e.Nonce[3] ^= 1 }, kb, ErrForged},
		{"id changed", func(e *pb.Envelope) { e.Id[0] ^= 1 }, kb, ErrForged},
		{"sender claimed by c", func(e *pb.Envelope) { e.From = []byte(c.ID()) }, kb, ErrForged},
		{"short nonce", func(e *pb.Envelope) { e.Nonce = e.Nonce[:12] }, kb, ErrMalformed},
		{"garbage sender", func(e *pb.Envelope) { e.From = []byte("nope") }, kb, ErrMalformed},
		{"reflected to its sender", func(e *pb.Envelope) { e.From, e.To = e.To, e.From }, ka, ErrForged},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := fresh()
			tc.mutate(env)
			if _, err := tc.opener.Open(env); !errors.Is(err, tc.want) {
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSealChecks(t *testing.T) {
	a, b := pair(t)
	ka := NewKeyring(a)
	if _, err := ka.Seal(msg(b.ID(), a.ID(), "not mine")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("sealing as someone else: %v", err)
	}
	big := msg(a.ID(), b.ID(), "")
	big.Body = make([]byte, MaxBody+1)
	if _, err := ka.Seal(big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized body: %v", err)
	}
	short := msg(a.ID(), b.ID(), "x")
	short.Id = short.Id[:8]
	if _, err := ka.Seal(short); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short id: %v", err)
	}
	// The largest body fits in an envelope under MaxEnvelope.
	full := msg(a.ID(), b.ID(), "")
	full.Body = make([]byte, MaxBody)
	env, err := ka.Seal(full)
	if err != nil {
		t.Fatal(err)
	}
	if n := proto.Size(env); n > MaxEnvelope {
		t.Fatalf("full envelope is %d bytes, over MaxEnvelope %d", n, MaxEnvelope)
	}
}

// FuzzOpen feeds arbitrary envelope bytes to Open: it must never panic, and
// anything it accepts must be a message really sealed by the sender.
func FuzzOpen(f *testing.F) {
	a, b := pair(f)
	ka, kb := NewKeyring(a), NewKeyring(b)
	env, err := ka.Seal(msg(a.ID(), b.ID(), "seed"))
	if err != nil {
		f.Fatal(err)
	}
	good, _ := proto.Marshal(env)
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x10})
	f.Fuzz(func(t *testing.T, data []byte) {
		env := new(pb.Envelope)
		if err := proto.Unmarshal(data, env); err != nil {
			return
		}
		m, err := kb.Open(env)
		if err != nil {
			return
		}
		if peer.ID(m.From) != a.ID() || peer.ID(m.To) != b.ID() {
			t.Fatalf("accepted a message from %q to %q", m.From, m.To)
		}
	})
}

func BenchmarkSeal256(b *testing.B) {
	x, y := pair(b)
	kx := NewKeyring(x)
	m := msg(x.ID(), y.ID(), string(make([]byte, 256)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := kx.Seal(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen256(b *testing.B) {
	x, y := pair(b)
	env, _ := NewKeyring(x).Seal(msg(x.ID(), y.ID(), string(make([]byte, 256))))
	ky := NewKeyring(y)
	ky.Open(env) // derive and cache the pairwise key first
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ky.Open(env); err != nil {
			b.Fatal(err)
		}
	}
}

func TestBoxUnbox(t *testing.T) {
	a, b := pair(t)
	c, _ := identity.Generate()
	ka, kb, kc := NewKeyring(a), NewKeyring(b), NewKeyring(c)
	env, _ := ka.Seal(msg(a.ID(), b.ID(), "for the inbox"))
	boxed, err := Box(env, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	// What a replica holds names neither the sender nor the text.
	if bytes.Contains(boxed, []byte(a.ID())) || bytes.Contains(boxed, []byte("for the inbox")) || bytes.Contains(boxed, env.Ciphertext) {
		t.Fatal("the boxed item reveals the sender or the content")
	}
	got, err := kb.Unbox(boxed)
	if err != nil {
		t.Fatal(err)
	}
	m, err := kb.Open(got)
	if err != nil || string(m.Body) != "for the inbox" {
		t.Fatalf("open after unbox: %v %v", m, err)
	}
	if _, err := kc.Unbox(boxed); !errors.Is(err, ErrNotBoxedForMe) {
		t.Fatalf("another identity unboxed it: %v", err)
	}
	boxed[len(boxed)-3] ^= 1
	if _, err := kb.Unbox(boxed); !errors.Is(err, ErrNotBoxedForMe) {
		t.Fatalf("tampered item: %v", err)
	}
	// Two boxes of the same envelope share nothing.
	b1, _ := Box(env, b.ID())
	b2, _ := Box(env, b.ID())
	if bytes.Equal(b1[:40], b2[:40]) {
		t.Fatal("boxing is deterministic")
	}
}

// FuzzUnbox feeds arbitrary items to Unbox and what it yields to Open.
func FuzzUnbox(f *testing.F) {
	a, b := pair(f)
	ka, kb := NewKeyring(a), NewKeyring(b)
	env, _ := ka.Seal(msg(a.ID(), b.ID(), "seed"))
	boxed, _ := Box(env, b.ID())
	f.Add(boxed)
	f.Add([]byte{0x0a, 0x20})
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := kb.Unbox(data)
		if err != nil {
			return
		}
		_, _ = kb.Open(env)
	})
}
