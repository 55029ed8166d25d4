package direct

import (
	"bufio"
	"context"
	"encoding/binary"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio/pbio"
	"go.uber.org/goleak"

	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/seal"
	"github.com/parley-p2p/parley/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// end is one side of a test: a real libp2p host on loopback with its store.
type end struct {
	id    *identity.Identity
	host  host.Host
	store *store.Store
	svc   *Service
	keys  *seal.Keyring

	mu  sync.Mutex
	got []*store.Message
}

func newEnd(t *testing.T) *end {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.Identity(id.PrivKey()), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "parley.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := &end{id: id, host: h, store: st, keys: seal.NewKeyring(id)}
	e.svc = New(h, e.keys, st, func(m *store.Message) {
		e.mu.Lock()
		e.got = append(e.got, m)
		e.mu.Unlock()
	}, slog.New(slog.DiscardHandler))
	if err := e.svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.svc.Close()
		h.Close()
		st.Close()
	})
	return e
}

func connect(t *testing.T, a, b *end) {
	t.Helper()
	if err := a.host.Connect(context.Background(), peer.AddrInfo{ID: b.host.ID(), Addrs: b.host.Addrs()}); err != nil {
		t.Fatal(err)
	}
}

func text(from, to *end, body string) *pb.Message {
	return &pb.Message{Id: NewID(), From: []byte(from.id.ID()), To: []byte(to.id.ID()), SentAt: time.Now().UnixMilli(), Kind: pb.Kind_KIND_TEXT, Body: []byte(body)}
}

func TestSendBatchPersistedInOrder(t *testing.T) {
	a, b := newEnd(t), newEnd(t)
	connect(t, a, b)
	var msgs []*pb.Message
	for i := range 100 {
		msgs = append(msgs, text(a, b, string(rune('a'+i%26))))
	}
	res, err := a.svc.Send(context.Background(), b.id.ID(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if !r.OK {
			t.Fatalf("message %d not acked: %s", i, r.Reason)
		}
	}
	// Persist before ack: the history is complete the moment Send returns.
	h, err := b.store.History(a.id.ID(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 100 {
		t.Fatalf("b stored %d messages, want 100", len(h))
	}
	for i, m := range h {
		if string(m.ID) != string(msgs[i].Id) || m.State != store.Received {
			t.Fatalf("entry %d is %x (%s), want %x", i, m.ID, m.State, msgs[i].Id)
		}
	}
	// The reply goes back over a stream b opens.
	res, err = b.svc.Send(context.Background(), a.id.ID(), []*pb.Message{text(b, a, "back")})
	if err != nil || !res[0].OK {
		t.Fatalf("reply: %v %v", res, err)
	}
}

func TestReplayDeduplicated(t *testing.T) {
	a, b := newEnd(t), newEnd(t)
	connect(t, a, b)
	m := text(a, b, "once")
	for range 3 {
		res, err := a.svc.Send(context.Background(), b.id.ID(), []*pb.Message{m})
		if err != nil || !res[0].OK {
			t.Fatalf("send: %v %v", res, err)
		}
	}
	// A byte-exact replay of a captured envelope is acked and dropped too.
	env, _ := a.keys.Seal(m)
	acks := rawExchange(t, a, b, func(w pbio.Writer) { w.WriteMsg(env) }, 1)
	if acks[0].Status != pb.Ack_OK {
		t.Fatalf("replay ack %v", acks[0])
	}
	h, _ := b.store.History(a.id.ID(), 0)
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(h) != 1 || len(b.got) != 1 {
		t.Fatalf("history %d, shown %d; want each 1", len(h), len(b.got))
	}
}

// rawExchange opens a bare stream from a to b, writes frames and reads n acks.
func rawExchange(t *testing.T, a, b *end, write func(pbio.Writer), n int) []*pb.Ack {
	t.Helper()
	str, err := a.host.NewStream(context.Background(), b.host.ID(), ID)
	if err != nil {
		t.Fatal(err)
	}
	defer str.Close()
	str.SetDeadline(time.Now().Add(10 * time.Second))
	write(pbio.NewDelimitedWriter(str))
	r := pbio.NewDelimitedReader(str, MaxFrame)
	var acks []*pb.Ack
	for range n {
		ack := new(pb.Ack)
		if err := r.ReadMsg(ack); err != nil {
			t.Fatalf("reading ack %d: %v", len(acks), err)
		}
		acks = append(acks, ack)
	}
	return acks
}

func TestRejects(t *testing.T) {
	a, b := newEnd(t), newEnd(t)
	c := newEnd(t)
	connect(t, a, b)
	tampered, _ := a.keys.Seal(text(a, b, "tampered"))
	tampered.Ciphertext[5] ^= 0x40
	forCarol, _ := a.keys.Seal(text(a, c, "for carol"))
	spoofed, _ := c.keys.Seal(text(c, b, "claims to be from c"))
	good, _ := a.keys.Seal(text(a, b, "fine"))
	acks := rawExchange(t, a, b, func(w pbio.Writer) {
		w.WriteMsg(tampered)
		w.WriteMsg(forCarol)
		w.WriteMsg(spoofed)
		w.WriteMsg(good)
	}, 4)
	want := []pb.Ack_Status{pb.Ack_REJECTED, pb.Ack_REJECTED, pb.Ack_REJECTED, pb.Ack_OK}
	for i, ack := range acks {
		if ack.Status != want[i] {
			t.Errorf("ack %d: %v (%s), want %v", i, ack.Status, ack.Reason, want[i])
		}
		if ack.Status == pb.Ack_REJECTED && ack.Reason == "" {
			t.Errorf("ack %d rejected without a reason", i)
		}
	}
	if h, _ := b.store.History(a.id.ID(), 0); len(h) != 1 || string(h[0].Body) != "fine" {
		t.Fatalf("b stored %d messages from a, want only the good one", len(h))
	}
	if h, _ := b.store.History(c.id.ID(), 0); len(h) != 0 {
		t.Fatal("b stored the spoofed message")
	}
}

func TestOversizedFrameRefusedWithoutAllocating(t *testing.T) {
	a, b := newEnd(t), newEnd(t)
	connect(t, a, b)
	str, err := a.host.NewStream(context.Background(), b.host.ID(), ID)
	if err != nil {
		t.Fatal(err)
	}
	str.SetDeadline(time.Now().Add(10 * time.Second))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	// Claim a 1 GiB frame and send a few bytes of it.
	str.Write(binary.AppendUvarint(nil, 1<<30))
	str.Write(make([]byte, 100))
	if _, err := bufio.NewReader(str).ReadByte(); err == nil {
		t.Fatal("recipient answered an oversized frame instead of resetting")
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Fatalf("allocated %d bytes after a 1 GiB length prefix", grew)
	}
	// The recipient still serves other streams.
	if res, err := a.svc.Send(context.Background(), b.id.ID(), []*pb.Message{text(a, b, "after")}); err != nil || !res[0].OK {
		t.Fatalf("send after oversized frame: %v %v", res, err)
	}
}

func TestGarbageResetsStream(t *testing.T) {
	a, b := newEnd(t), newEnd(t)
	connect(t, a, b)
	str, err := a.host.NewStream(context.Background(), b.host.ID(), ID)
	if err != nil {
		t.Fatal(err)
	}
	str.SetDeadline(time.Now().Add(10 * time.Second))
	str.Write([]byte{0x05, 0xff, 0xff, 0xff, 0xff, 0xff})
	if _, err := bufio.NewReader(str).ReadByte(); err == nil {
		t.Fatal("recipient answered garbage")
	}
	if h, _ := b.store.History(a.id.ID(), 0); len(h) != 0 {
		t.Fatal("garbage was stored")
	}
}

func TestSessionSurvivesPeerRestartingStream(t *testing.T) {
	a, b := newEnd(t), newEnd(t)
	connect(t, a, b)
	if _, err := a.svc.Send(context.Background(), b.id.ID(), []*pb.Message{text(a, b, "one")}); err != nil {
		t.Fatal(err)
	}
	// b drops every inbound stream, as an idle timeout would.
	b.svc.mu.Lock()
	for s := range b.svc.inbound {
		s.Reset()
	}
	b.svc.mu.Unlock()
	res, err := a.svc.Send(context.Background(), b.id.ID(), []*pb.Message{text(a, b, "two")})
	if err != nil || !res[0].OK {
		t.Fatalf("send on a dead kept stream did not recover: %v %v", res, err)
	}
}

func TestUnreachablePeerFailsFast(t *testing.T) {
	a := newEnd(t)
	ghost, _ := identity.Generate()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m := &pb.Message{Id: NewID(), From: []byte(a.id.ID()), To: []byte(ghost.ID()), Body: []byte("x")}
	if _, err := a.svc.Send(ctx, ghost.ID(), []*pb.Message{m}); err == nil {
		t.Fatal("send to a peer with no known address succeeded")
	}
}

var _ network.StreamHandler = (*Service)(nil).handle

// TestRefusedPeerGetsNothingThrough: a peer the node refuses (denied or
// blocked) gets no message through, even over a connection the node
// dialled itself (which the connection gater lets stand); the node can
// still write to it.
func TestRefusedPeerGetsNothingThrough(t *testing.T) {
	a, b := newEnd(t), newEnd(t)
	b.svc.Refuse(func(p peer.ID) bool { return p == a.id.ID() })
	connect(t, b, a) // b dials
	if res, err := a.svc.Send(context.Background(), b.id.ID(), []*pb.Message{text(a, b, "let me in")}); err == nil && res[0].OK {
		t.Fatal("a refused peer's message was acked")
	}
	if h, _ := b.store.History(a.id.ID(), 0); len(h) != 0 {
		t.Fatalf("b stored %d messages from a refused peer", len(h))
	}
	if res, err := b.svc.Send(context.Background(), a.id.ID(), []*pb.Message{text(b, a, "I may write to you")}); err != nil || !res[0].OK {
		t.Fatalf("b writing to the peer it refuses: %v %v", res, err)
	}
}
