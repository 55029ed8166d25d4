package presence

import (
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/internal/pb"
)

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func newID(t testing.TB) *identity.Identity {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// signed builds a signed record of id's with the given seq, plain or sealed.
func signed(t testing.TB, id *identity.Identity, seq uint64, key *PresenceKey, status pb.Status) *pb.PresenceRecord {
	t.Helper()
	rec := &pb.PresenceRecord{PeerId: []byte(id.ID()), Seq: seq, ExpiresAt: now.Add(30 * time.Minute).UnixMilli()}
	if err := SetBody(rec, &pb.PresenceBody{Status: status, Note: "hello"}, key); err != nil {
		t.Fatal(err)
	}
	if err := Sign(rec, id.PrivKey()); err != nil {
		t.Fatal(err)
	}
	return rec
}

func encode(rec *pb.PresenceRecord) []byte {
	b, _ := proto.Marshal(rec)
	return b
}

func TestValidateAcceptsAndRejects(t *testing.T) {
	alice, mallory := newID(t), newID(t)
	v := Validator{Now: func() time.Time { return now }}
	good := signed(t, alice, 1, nil, pb.Status_ONLINE)
	if err := v.Validate(Key(alice.ID()), encode(good)); err != nil {
		t.Fatalf("good record: %v", err)
	}
	sealedKey := NewPresenceKey()
	if err := v.Validate(Key(alice.ID()), encode(signed(t, alice, 2, &sealedKey, pb.Status_AWAY))); err != nil {
		t.Fatalf("sealed record: %v", err)
	}
	cases := []struct {
		name string
		key  string
		rec  func() []byte
		want error
	}{
		{"forged signature", Key(alice.ID()), func() []byte {
			r := signed(t, alice, 1, nil, pb.Status_ONLINE)
			r.Signature[0] ^= 1
			return encode(r)
		}, ErrBadSignature},
		{"body changed after signing", Key(alice.ID()), func() []byte {
			r := signed(t, alice, 1, nil, pb.Status_ONLINE)
			r.Body = append(r.Body, 0)
			return encode(r)
		}, ErrBadSignature},
		{"seq changed after signing", Key(alice.ID()), func() []byte {
			r := signed(t, alice, 1, nil, pb.Status_ONLINE)
			r.Seq = 99
			return encode(r)
		}, ErrBadSignature},
		{"signed by another key", Key(alice.ID()), func() []byte {
			r := signed(t, mallory, 1, nil, pb.Status_ONLINE)
			r.PeerId = []byte(alice.ID())
			return encode(r)
		}, ErrBadSignature},
		{"stored under another peer's key", Key(alice.ID()), func() []byte {
			return encode(signed(t, mallory, 1, nil, pb.Status_ONLINE))
		}, ErrInvalid},
		{"expired", Key(alice.ID()), func() []byte {
			r := signed(t, alice, 1, nil, pb.Status_ONLINE)
			r.ExpiresAt = now.Add(-ClockSkew - time.Second).UnixMilli()
			Sign(r, alice.PrivKey())
			return encode(r)
		}, ErrExpired},
		{"expires too far ahead", Key(alice.ID()), func() []byte {
			r := signed(t, alice, 1, nil, pb.Status_ONLINE)
			r.ExpiresAt = now.Add(MaxLifetime + ClockSkew + time.Minute).UnixMilli()
			Sign(r, alice.PrivKey())
			return encode(r)
		}, ErrInvalid},
		{"oversized", Key(alice.ID()), func() []byte {
			r := signed(t, alice, 1, nil, pb.Status_ONLINE)
			r.Body = make([]byte, MaxRecordSize)
			Sign(r, alice.PrivKey())
			return encode(r)
		}, ErrInvalid},
		{"garbage", Key(alice.ID()), func() []byte { return []byte{0xff, 0xff, 0x01} }, ErrInvalid},
		{"sealed without key id", Key(alice.ID()), func() []byte {
			r := signed(t, alice, 1, &sealedKey, pb.Status_ONLINE)
			r.KeyId = nil
			Sign(r, alice.PrivKey())
			return encode(r)
		}, ErrInvalid},
	}
	// With a memory of good signatures holding alice's good records (the
	// tampered ones below are made from the same fields), every case must
	// be judged the same.
	checked := NewChecked(16)
	cv := Validator{Now: v.Now, Checked: checked}
	for _, seq := range []uint64{1, 2} {
		if err := cv.Validate(Key(alice.ID()), encode(signed(t, alice, seq, nil, pb.Status_ONLINE))); err != nil {
			t.Fatalf("good record: %v", err)
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := v.Validate(tc.key, tc.rec()); !errors.Is(err, tc.want) {
				t.Fatalf("Validate: %v, want %v", err, tc.want)
			}
			if err := cv.Validate(tc.key, tc.rec()); !errors.Is(err, tc.want) {
				t.Fatalf("Validate with remembered signatures: %v, want %v", err, tc.want)
			}
		})
	}
	// Within the clock skew a just-expired record still passes.
	r := signed(t, alice, 1, nil, pb.Status_ONLINE)
	r.ExpiresAt = now.Add(-ClockSkew / 2).UnixMilli()
	Sign(r, alice.PrivKey())
	if err := v.Validate(Key(alice.ID()), encode(r)); err != nil {
		t.Fatalf("record inside the skew allowance: %v", err)
	}
}

func TestSelect(t *testing.T) {
	alice := newID(t)
	v := Validator{Now: func() time.Time { return now }}
	key := Key(alice.ID())
	r5, r7 := encode(signed(t, alice, 5, nil, pb.Status_ONLINE)), encode(signed(t, alice, 7, nil, pb.Status_AWAY))
	r7b := encode(signed(t, alice, 7, nil, pb.Status_BUSY))
	if i, err := v.Select(key, [][]byte{r5, r7}); err != nil || i != 1 {
		t.Fatalf("highest seq: %d %v", i, err)
	}
	if i, _ := v.Select(key, [][]byte{r7, r5}); i != 0 {
		t.Fatalf("highest seq first: %d", i)
	}
	if i, _ := v.Select(key, [][]byte{r7b, r7}); i != 0 {
		t.Fatalf("tie must keep index 0, got %d", i)
	}
	if i, _ := v.Select(key, [][]byte{[]byte("junk"), r5}); i != 1 {
		t.Fatalf("invalid values must lose: %d", i)
	}
	if _, err := v.Select(key, [][]byte{[]byte("junk")}); err == nil {
		t.Fatal("Select with no valid value succeeded")
	}
}

func TestSealedBody(t *testing.T) {
	alice := newID(t)
	k, other := NewPresenceKey(), NewPresenceKey()
	rec := signed(t, alice, 3, &k, pb.Status_BUSY)
	if _, err := OpenBody(rec, nil); !errors.Is(err, ErrNoKey) {
		t.Fatalf("no key: %v", err)
	}
	if _, err := OpenBody(rec, &other); !errors.Is(err, ErrNoKey) {
		t.Fatalf("another key: %v", err)
	}
	body, err := OpenBody(rec, &k)
	if err != nil || body.Status != pb.Status_BUSY || body.Note != "hello" {
		t.Fatalf("open: %v %v", body, err)
	}
	// A sealed body copied into a record with another seq does not open.
	moved := signed(t, alice, 4, &k, pb.Status_ONLINE)
	moved.Body = rec.Body
	if _, err := OpenBody(moved, &k); !errors.Is(err, ErrInvalid) {
		t.Fatalf("moved body: %v", err)
	}
	// A plain body needs no key.
	if b, err := OpenBody(signed(t, alice, 5, nil, pb.Status_AWAY), nil); err != nil || b.Status != pb.Status_AWAY {
		t.Fatalf("plain: %v %v", b, err)
	}
}

func TestPolicy(t *testing.T) {
	alex, bob, carol, stranger := peer.ID("alex"), peer.ID("bob"), peer.ID("carol"), peer.ID("stranger")
	contacts := map[peer.ID]bool{alex: true, bob: true, carol: true}
	p := Policy{Mode: Contacts, Contacts: contacts, Denied: map[peer.ID]bool{alex: true}}
	if p.MaySee(alex) || !p.MaySee(bob) || p.MaySee(stranger) {
		t.Fatal("contacts mode with alex denied")
	}
	if !p.Sealed() || !p.Refused(alex) || p.Refused(bob) {
		t.Fatal("sealed / refused")
	}
	if h := p.KeyHolders(); len(h) != 2 || h[alex] {
		t.Fatalf("holders %v", h)
	}
	// The user does not subscribe to alex: the connection would show alex
	// the user is online.
	p.Blocked = map[peer.ID]bool{carol: true}
	if p.Watches(alex) || !p.Watches(bob) || p.Watches(carol) || p.Watches(stranger) {
		t.Fatal("watches: only contacts neither denied nor blocked")
	}
	p.Blocked = nil
	p.Mode = Allowlist
	p.Allowed = map[peer.ID]bool{carol: true, stranger: true}
	if p.MaySee(bob) || !p.MaySee(carol) || p.MaySee(stranger) {
		t.Fatal("allowlist: only allowed contacts")
	}
	p = Policy{Mode: Everyone, Contacts: contacts}
	if p.Sealed() || !p.MaySee(stranger) {
		t.Fatal("everyone mode")
	}
	p.Denied = map[peer.ID]bool{alex: true}
	if !p.Sealed() {
		t.Fatal("a denial in everyone mode must seal the record, or alex could read the DHT")
	}
}

func TestPlanKeys(t *testing.T) {
	a, b, c := peer.ID("a"), peer.ID("b"), peer.ID("c")
	set := func(ps ...peer.ID) map[peer.ID]bool {
		m := map[peer.ID]bool{}
		for _, p := range ps {
			m[p] = true
		}
		return m
	}
	if plan := PlanKeys(set(a, b), set(a, b, c)); plan.Rotate || len(plan.SendTo) != 1 || plan.SendTo[0] != c {
		t.Fatalf("newcomer: %+v", plan)
	}
	if plan := PlanKeys(set(a, b, c), set(a, c)); !plan.Rotate || len(plan.SendTo) != 2 {
		t.Fatalf("revocation: %+v", plan)
	}
	if plan := PlanKeys(set(a), set(a)); plan.Rotate || len(plan.SendTo) != 0 {
		t.Fatalf("no change: %+v", plan)
	}
}

// FuzzValidate feeds arbitrary bytes to the validator every DHT server runs.
func FuzzValidate(f *testing.F) {
	alice := newID(f)
	k := NewPresenceKey()
	f.Add(encode(signed(f, alice, 1, nil, pb.Status_ONLINE)))
	f.Add(encode(signed(f, alice, 2, &k, pb.Status_AWAY)))
	f.Add([]byte{})
	v := Validator{Now: func() time.Time { return now }}
	key := Key(alice.ID())
	f.Fuzz(func(t *testing.T, data []byte) {
		if v.Validate(key, data) == nil {
			rec, _ := Parse(data)
			if peer.ID(rec.PeerId) != alice.ID() {
				t.Fatal("accepted a record of another peer")
			}
			_, _ = OpenBody(rec, &k)
		}
		_, _ = v.Select(key, [][]byte{data, data})
	})
}

func TestCheckedRemembersOnlyGoodSignaturesAndIsBounded(t *testing.T) {
	alice := newID(t)
	c := NewChecked(2)
	recs := []*pb.PresenceRecord{}
	for seq := range uint64(3) {
		r := signed(t, alice, seq+1, nil, pb.Status_ONLINE)
		recs = append(recs, r)
		if err := c.Verify(Key(alice.ID()), r, now); err != nil {
			t.Fatalf("record %d: %v", seq+1, err)
		}
	}
	if len(c.seen) != 2 || len(c.order) != 2 {
		t.Fatalf("remembers %d signatures (ring of %d), want 2", len(c.seen), len(c.order))
	}
	// A remembered record is still judged on its expiry.
	if err := c.Verify(Key(alice.ID()), recs[2], now.Add(time.Hour)); !errors.Is(err, ErrExpired) {
		t.Fatalf("remembered but expired: %v, want %v", err, ErrExpired)
	}
	// A bad signature is never remembered: rejected every time.
	bad := signed(t, alice, 9, nil, pb.Status_ONLINE)
	bad.Signature[5] ^= 1
	for range 2 {
		if err := c.Verify(Key(alice.ID()), bad, now); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("bad signature: %v, want %v", err, ErrBadSignature)
		}
	}
	if len(c.seen) != 2 {
		t.Fatalf("remembers %d signatures after a bad one, want 2", len(c.seen))
	}
	var none *Checked
	if err := none.Verify(Key(alice.ID()), recs[0], now); err != nil {
		t.Fatalf("nil Checked: %v", err)
	}
}
