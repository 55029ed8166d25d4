package node

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/inbox"
	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/presence"
)

// inboxSwarm is a swarm whose nodes keep their homes, so that any can be
// stopped and started again with its store.
type inboxSwarm struct {
	t     *testing.T
	dir   string
	nodes map[string]*Node
	homes map[string]string
	boot  string
}

func newInboxSwarm(t *testing.T, names ...string) *inboxSwarm {
	s := &inboxSwarm{t: t, dir: t.TempDir(), nodes: map[string]*Node{}, homes: map[string]string{}}
	for _, name := range names {
		s.start(name)
	}
	return s
}

func (s *inboxSwarm) start(name string) *Node {
	s.t.Helper()
	home, ok := s.homes[name]
	if !ok {
		home = filepath.Join(s.dir, name)
		if _, err := identity.Create(home); err != nil {
			s.t.Fatal(err)
		}
		s.homes[name] = home
	}
	return s.startHome(name, home)
}

func (s *inboxSwarm) startHome(name, home string) *Node {
	s.t.Helper()
	cfg := Config{Home: home, Listen: loopback}
	cfg.Presence.Republish = time.Hour
	cfg.Presence.Retry = 500 * time.Millisecond
	cfg.Inbox.Collect = time.Hour // tests collect when they mean to
	cfg.Inbox.Sweep = time.Hour
	cfg.Outbox.DirectBudget = time.Second
	for _, n := range s.nodes {
		cfg.Bootstrap = []string{n.Addrs()[0].String()}
		break
	}
	n, err := New(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		s.t.Fatal(err)
	}
	s.nodes[name] = n
	s.t.Cleanup(func() { n.Close() })
	return n
}

func (s *inboxSwarm) stop(name string) {
	s.nodes[name].Close()
	delete(s.nodes, name)
}

// holdings is what every running node holds for p.
func (s *inboxSwarm) holdings(p peer.ID) int {
	total := 0
	for _, n := range s.nodes {
		total += n.replica.Totals()[p].Items
	}
	return total
}

func texts50(t *testing.T, alice *Node, bob peer.ID, n int) []string {
	t.Helper()
	var sent []string
	for i := range n {
		text := fmt.Sprintf("while you were away %02d", i)
		m, err := alice.Send(context.Background(), api.SendRequest{To: bob.String(), Text: text, WaitMillis: 10000})
		if err != nil {
			t.Fatal(err)
		}
		if m.State != "stored" || m.Replicas < 3 {
			t.Fatalf("message %d is %s %d/%d, want stored at 3 or more", i, m.State, m.Replicas, m.Of)
		}
		sent = append(sent, text)
	}
	return sent
}

func checkReceived(t *testing.T, bob *Node, alice peer.ID, want []string) {
	t.Helper()
	h, err := bob.History(context.Background(), alice.String(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != len(want) {
		t.Fatalf("bob has %d messages, want %d", len(h), len(want))
	}
	for i, m := range h {
		if m.Text != want[i] {
			t.Fatalf("message %d is %q, want %q (order or duplicates wrong)", i, m.Text, want[i])
		}
	}
}

func TestOfflineDelivery(t *testing.T) {
	s := newInboxSwarm(t, "boot", "r1", "r2", "r3", "r4", "r5", "r6", "alice", "bob")
	ctx := context.Background()
	alice, bobID := s.nodes["alice"], s.nodes["bob"].ID()
	aliceID := alice.ID()
	s.stop("bob")
	sent := texts50(t, alice, bobID, 50)
	if s.holdings(bobID) < 50*3 {
		t.Fatalf("replicas hold %d items for bob, want at least 150", s.holdings(bobID))
	}
	s.stop("alice")
	bob := s.start("bob")
	if _, err := bob.collect.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	checkReceived(t, bob, aliceID, sent)
	if n := s.holdings(bobID); n != 0 {
		t.Fatalf("replicas still hold %d items for bob after he fetched them", n)
	}
	// A second pass finds nothing and shows nothing twice.
	if n, err := bob.collect.Collect(ctx); err != nil || n != 0 {
		t.Fatalf("second collection: %d new, %v", n, err)
	}
	// Alice learns, when she is back, that they arrived: bob's receipts
	// waited for her at the replicas.
	alice = s.start("alice")
	alice.collect.Collect(ctx)
	waitFor(t, "alice to see her messages delivered", func() bool {
		h, _ := alice.History(ctx, bobID.String(), 0)
		for _, m := range h {
			if m.State != "delivered" && m.State != "read" {
				return false
			}
		}
		return len(h) == 50
	})
}

func TestOfflineDeliveryWithReplicasLost(t *testing.T) {
	s := newInboxSwarm(t, "boot", "r1", "r2", "r3", "r4", "r5", "r6", "alice", "bob")
	ctx := context.Background()
	alice, bobID := s.nodes["alice"], s.nodes["bob"].ID()
	s.stop("bob")
	sent := texts50(t, alice, bobID, 20)
	// Stop r−1 of bob's replicas (as alice's client sees them).
	replicas, err := inbox.NewClient(alice.host, alice.dht.Closest, 5).Replicas(ctx, bobID)
	if err != nil {
		t.Fatal(err)
	}
	stopped := 0
	for name, n := range s.nodes {
		for _, r := range replicas[:len(replicas)-1] {
			if n.ID() == r && name != "alice" {
				s.stop(name)
				stopped++
			}
		}
	}
	if stopped != len(replicas)-1 {
		t.Fatalf("stopped %d of %d replicas", stopped, len(replicas)-1)
	}
	aliceID := alice.ID()
	s.stop("alice")
	bob := s.start("bob")
	if _, err := bob.collect.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	checkReceived(t, bob, aliceID, sent)
}

func TestHandoffToCloserNewcomers(t *testing.T) {
	s := newInboxSwarm(t, "boot", "r1", "r2", "r3", "r4", "r5", "alice", "bob")
	ctx := context.Background()
	alice, bobID := s.nodes["alice"], s.nodes["bob"].ID()
	aliceID := alice.ID()
	s.stop("bob")
	sent := texts50(t, alice, bobID, 10)
	s.stop("alice")
	// Newcomers closer to bob's inbox key than anyone now join.
	old := map[string]bool{}
	for name := range s.nodes {
		old[name] = true
	}
	for i, home := range closerHomes(t, s, bobID, 5) {
		s.startHome(fmt.Sprint("new", i), home)
	}
	// The old replicas notice and hand their items over...
	for name := range old {
		s.nodes[name].replica.Sweep(ctx)
	}
	// ...and then all leave: only the newcomers hold bob's messages.
	for name := range old {
		s.stop(name)
	}
	if got := s.holdings(bobID); got < 10 {
		t.Fatalf("newcomers hold %d items", got)
	}
	bob := s.start("bob")
	if _, err := bob.collect.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	checkReceived(t, bob, aliceID, sent)
}

// closerHomes makes n identities closer to p's inbox key than every node
// now running, in homes of their own.
func closerHomes(t *testing.T, s *inboxSwarm, p peer.ID, n int) []string {
	t.Helper()
	var running []peer.ID
	for _, nd := range s.nodes {
		running = append(running, nd.ID())
	}
	var homes []string
	for i := 0; len(homes) < n; i++ {
		id, _ := identity.Generate()
		if !closerThanAll(id.ID(), running, inbox.Key(p)) {
			continue
		}
		home := filepath.Join(s.dir, fmt.Sprint("closer", i))
		os.MkdirAll(home, 0o700)
		raw, _ := cryptoMarshal(id)
		os.WriteFile(filepath.Join(home, identity.KeyFile), raw, 0o600)
		homes = append(homes, home)
	}
	return homes
}

func TestReplicaLearnsNothing(t *testing.T) {
	s := newInboxSwarm(t, "boot", "r1", "r2", "r3", "alice", "bob")
	ctx := context.Background()
	alice, bob := s.nodes["alice"], s.nodes["bob"]
	bobID := bob.ID()
	s.stop("bob")
	const secret = "the eagle lands at midnight"
	m, err := alice.Send(ctx, api.SendRequest{To: bobID.String(), Text: secret, WaitMillis: 10000})
	if err != nil || m.State != "stored" {
		t.Fatalf("%+v %v", m, err)
	}
	for name, n := range s.nodes {
		if name == "alice" {
			continue
		}
		held, err := n.store.Held(bobID, nil, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range held {
			if bytes.Contains(it.Data, []byte(secret)) || bytes.Contains(it.Data, []byte(alice.ID())) {
				t.Fatalf("%s's held item reveals the text or the sender", name)
			}
		}
		raw, err := os.ReadFile(filepath.Join(s.homes[name], DBFile))
		if err != nil {
			t.Fatal(err)
		}
		for _, needle := range [][]byte{[]byte(secret), []byte(alice.ID()), []byte(alice.ID().String())} {
			if i := bytes.Index(raw, needle); i >= 0 {
				lo, hi := max(i-200, 0), min(i+len(needle)+100, len(raw))
				t.Errorf("%s's database holds the text or the sender's peer ID: %q at %d of %d bytes: %q", name, needle[:8], i, len(raw), raw[lo:hi])
			}
		}
	}
	// Nobody but bob may list, fetch or delete bob's items: a replica
	// answers a stranger about the stranger's own inbox, which is empty.
	mallory := s.start("mallory")
	c := inbox.NewClient(mallory.host, mallory.dht.Closest, 5)
	replicas, _ := c.Replicas(ctx, bobID)
	var ids [][]byte
	for _, r := range replicas {
		for name, n := range s.nodes {
			if n.ID() != r || name == "mallory" {
				continue
			}
			held, _ := n.store.Held(bobID, nil, false)
			for _, it := range held {
				ids = append(ids, it.ID)
			}
		}
		items, err := c.List(ctx, r, 0)
		if err != nil || len(items) != 0 {
			t.Fatalf("mallory listed %d items at %s (%v)", len(items), r, err)
		}
		if got, _ := c.Fetch(ctx, r, ids); len(got) != 0 {
			t.Fatalf("mallory fetched %d of bob's items", len(got))
		}
		c.Delete(ctx, r, ids)
	}
	if len(ids) == 0 {
		t.Fatal("found no item ids to try")
	}
	if got := s.holdings(bobID); got == 0 {
		t.Fatal("mallory's delete removed bob's items")
	}
}

func TestFloodingDepositorStaysBounded(t *testing.T) {
	s := newInboxSwarm(t, "boot", "r1", "alice", "bob", "mallory")
	ctx := context.Background()
	r1 := s.nodes["r1"]
	bobID := s.nodes["bob"].ID()
	mallory := s.nodes["mallory"]
	// Mallory floods r1 directly with junk-but-well-formed items for bob.
	flood := inbox.NewClient(mallory.host, func(context.Context, string) ([]peer.ID, error) { return []peer.ID{r1.ID()}, nil }, 1)
	refused := 0
	for i := range 400 {
		item := fakeItem(i)
		if _, err := flood.Deposit(ctx, bobID, item, 0); err != nil {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("a flood of 400 deposits in a minute was never refused")
	}
	held := r1.replica.Totals()[bobID]
	if held.Items > 300 {
		t.Fatalf("r1 holds %d items from one depositor, over its rate", held.Items)
	}
	// Alice still gets her message stored at r1.
	alice := s.nodes["alice"]
	legit := inbox.NewClient(alice.host, func(context.Context, string) ([]peer.ID, error) { return []peer.ID{r1.ID()}, nil }, 1)
	if st, err := legit.Deposit(ctx, s.nodes["boot"].ID(), fakeItem(10000), 0); err != nil || st.Replicas != 1 {
		t.Fatalf("a legitimate deposit during the flood: %+v %v", st, err)
	}
	// Bad input: oversized, over-long TTL and garbage are refused.
	if _, err := legit.Deposit(ctx, bobID, bytes.Repeat([]byte{1}, 70<<10), 0); err == nil {
		t.Fatal("an oversized item was stored")
	}
	if _, err := legit.Deposit(ctx, bobID, fakeItem(1), 15*24*time.Hour); err == nil {
		t.Fatal("a 15-day lifetime was accepted")
	}
	if _, err := legit.Deposit(ctx, bobID, []byte("garbage"), 0); err == nil {
		t.Fatal("garbage was stored")
	}
}

// fakeItem is well-formed as a sealed item but opens for nobody.
func fakeItem(i int) []byte {
	it := &pb.SealedItem{Ephemeral: bytes.Repeat([]byte{byte(i)}, 32), Nonce: make([]byte, 24), Ciphertext: []byte(fmt.Sprintf("junk junk junk junk %d", i))}
	raw, _ := protoMarshal(it)
	return raw
}

// Between lookups a collection asks only the replicas remembered from the
// last one: an online node's periodic pass costs no walk of the DHT.
func TestCollectBetweenLookupsAsksRememberedReplicas(t *testing.T) {
	s := newInboxSwarm(t, "boot", "r1", "r2", "r3", "r4", "r5", "alice", "bob")
	ctx := context.Background()
	alice, bobID := s.nodes["alice"], s.nodes["bob"].ID()
	s.stop("bob")
	sent := texts50(t, alice, bobID, 3)
	bob := s.start("bob")
	if _, err := bob.collect.Collect(ctx); err != nil { // the first pass looks up
		t.Fatal(err)
	}
	checkReceived(t, bob, alice.ID(), sent)
	// Its presence record is stored (a lookup of its own) before counting.
	waitFor(t, "bob's presence record to be stored", func() bool {
		_, _, st := bob.presence.Status()
		return st.Accepted > 0
	})
	before := bob.DHTStats()
	for range 3 {
		if _, err := bob.collect.Collect(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if after := bob.DHTStats(); after.Closest != before.Closest {
		t.Fatalf("3 collections between lookups made %d lookups, want 0", after.Closest-before.Closest)
	}
}

// TestPresenceStoreFindsTheReplicas: the inbox lives under the presence
// key, so the lookup that republishes a record also tells the collector
// where its inbox now is. Newcomers closer to bob's key take his inbox
// over; republishing his record finds them, and his next pass asks them with no
// lookup of its own (before, it asked the replicas it remembered, which
// answered with nothing, and left his items waiting).
func TestPresenceStoreFindsTheReplicas(t *testing.T) {
	s := newInboxSwarm(t, "boot", "r1", "r2", "r3", "r4", "r5", "alice", "bob")
	ctx := context.Background()
	alice, bob := s.nodes["alice"], s.nodes["bob"]
	if inbox.Key(bob.ID()) != presence.Key(bob.ID()) {
		t.Fatal("the inbox key is not the presence key")
	}
	// The pass at start is over (Collect waits for it): bob remembers the
	// replicas among the nodes up then.
	if _, err := bob.collect.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	newcomers := map[peer.ID]bool{}
	for i, home := range closerHomes(t, s, bob.ID(), 5) {
		newcomers[s.startHome(fmt.Sprint("new", i), home).ID()] = true
	}
	// Republish (as every 10 minutes) until the lookup finds all the
	// newcomers: those that just joined may not be in anyone's routing
	// table yet.
	waitFor(t, "bob's republish to find the newcomers", func() bool {
		_, _, before := bob.presence.Status()
		bob.presence.Republish()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if _, _, st := bob.presence.Status(); st.Seq > before.Seq && st.Accepted > 0 {
				break
			}
			if time.Now().After(deadline) {
				return false
			}
		}
		found := 0
		for _, r := range bob.collect.Remembered() {
			if newcomers[r] {
				found++
			}
		}
		return found == len(newcomers)
	})
	// Items left for bob now go to the newcomers only.
	for i := range 3 {
		if st, err := alice.inboxes.Deposit(ctx, bob.ID(), fakeItem(i), time.Hour); err != nil || st.Replicas == 0 {
			t.Fatalf("deposit: %+v, %v", st, err)
		}
	}
	// (Alice's lookups may still miss a newcomer and leave a copy with an
	// older node; what the newcomers hold is what bob must find.)
	heldByNewcomers := func() int {
		total := 0
		for _, n := range s.nodes {
			if newcomers[n.ID()] {
				total += n.replica.Totals()[bob.ID()].Items
			}
		}
		return total
	}
	if heldByNewcomers() == 0 {
		t.Fatal("the newcomers hold none of bob's items")
	}
	lookups := bob.DHTStats().Closest
	if _, err := bob.collect.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	if got := heldByNewcomers(); got != 0 {
		t.Errorf("after bob's pass, the newcomers still hold %d of his items", got)
	}
	if n := bob.DHTStats().Closest - lookups; n != 0 {
		t.Errorf("bob's pass made %d lookups, want none", n)
	}
}
