package node

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"go.uber.org/goleak"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/identity"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// loopback is TCP only: a QUIC dial to a node that has already stopped
// waits out the handshake timeout (there is no "connection refused"), which
// would make every test's teardown slow. TestQUIC covers QUIC.
var loopback = []string{"/ip4/127.0.0.1/tcp/0"}

func startNode(t *testing.T, home string, bootstrap ...*Node) *Node {
	t.Helper()
	if _, err := identity.Load(home); err != nil {
		if _, err := identity.Create(home); err != nil {
			t.Fatal(err)
		}
	}
	var boot []string
	for _, b := range bootstrap {
		boot = append(boot, b.Addrs()[0].String())
	}
	return started(t, Config{Home: home, Listen: loopback, Bootstrap: boot})
}

// started builds a node from cfg and starts it; it is closed when the test ends.
func started(tb testing.TB, cfg Config) *Node {
	tb.Helper()
	n, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { n.Close() })
	return n
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func send(t *testing.T, from *Node, to, text string) api.Message {
	t.Helper()
	m, err := from.Send(context.Background(), api.SendRequest{To: to, Text: text})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func texts(t *testing.T, n *Node, peer string) []string {
	t.Helper()
	h, err := n.History(context.Background(), peer, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range h {
		out = append(out, m.Direction+":"+m.Text)
	}
	return out
}

func TestTwoNodesBothWays(t *testing.T) {
	dir := t.TempDir()
	alice := startNode(t, filepath.Join(dir, "alice"))
	bob := startNode(t, filepath.Join(dir, "bob"), alice)
	if _, err := alice.AddContact(context.Background(), api.Contact{Name: "bob", ID: bob.ID().String()}); err != nil {
		t.Fatal(err)
	}
	events, cancel := bob.Subscribe()
	defer cancel()
	for i := range 5 {
		if m := send(t, alice, "bob", fmt.Sprint("a", i)); m.State != "delivered" {
			t.Fatalf("alice's message %d is %s (%s)", i, m.State, m.Reason)
		}
		if m := send(t, bob, alice.ID().String(), fmt.Sprint("b", i)); m.State != "delivered" {
			t.Fatalf("bob's message %d is %s (%s)", i, m.State, m.Reason)
		}
	}
	want := "out:a0 in:b0 out:a1 in:b1 out:a2 in:b2 out:a3 in:b3 out:a4 in:b4"
	if got := strings.Join(texts(t, alice, "bob"), " "); got != want {
		t.Fatalf("alice's history: %s\nwant %s", got, want)
	}
	if got := strings.Join(texts(t, bob, alice.ID().String()), " "); got != flip(want) {
		t.Fatalf("bob's history: %s", got)
	}
	// Bob was told of each message as it arrived.
	seen := 0
	for seen < 5 {
		select {
		case e := <-events:
			if e.Type == "message" && e.Message != nil {
				if e.Message.Text != fmt.Sprint("a", seen) {
					t.Fatalf("event %d is %q", seen, e.Message.Text)
				}
				seen++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d message events", seen)
		}
	}
}

func flip(s string) string {
	return strings.NewReplacer("out:", "in:", "in:", "out:").Replace(s)
}

func TestFiveNodesFindEachOtherThroughTheDHT(t *testing.T) {
	dir := t.TempDir()
	first := startNode(t, filepath.Join(dir, "n0"))
	nodes := []*Node{first}
	for i := 1; i < 5; i++ {
		nodes = append(nodes, startNode(t, filepath.Join(dir, fmt.Sprint("n", i)), first))
	}
	// Every node writes to every other; most pairs are not yet connected
	// and find each other's addresses through the DHT.
	for i, from := range nodes {
		for j, to := range nodes {
			if i == j {
				continue
			}
			if m := send(t, from, to.ID().String(), fmt.Sprintf("%d->%d", i, j)); m.State != "delivered" {
				t.Fatalf("%d->%d is %s (%s)", i, j, m.State, m.Reason)
			}
		}
	}
	for j, to := range nodes {
		for i, from := range nodes {
			if i == j {
				continue
			}
			got := texts(t, to, from.ID().String())
			mine, theirs := fmt.Sprintf("out:%d->%d", j, i), fmt.Sprintf("in:%d->%d", i, j)
			want := []string{mine, theirs} // who wrote first is who has the lower index
			if i < j {
				want = []string{theirs, mine}
			}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Fatalf("node %d's history with %d: %v, want %v", j, i, got, want)
			}
		}
	}
}

func TestQueuedUntilPeerComesOnline(t *testing.T) {
	dir := t.TempDir()
	alice := startNode(t, filepath.Join(dir, "alice"))
	bobHome := filepath.Join(dir, "bob")
	bobID, err := identity.Create(bobHome)
	if err != nil {
		t.Fatal(err)
	}
	m, err := alice.Send(context.Background(), api.SendRequest{To: bobID.ID().String(), Text: "are you there?", WaitMillis: 300})
	if err != nil {
		t.Fatal(err)
	}
	if m.State != "queued" {
		t.Fatalf("message to an offline peer is %s, want queued", m.State)
	}
	if out, _ := alice.Outbox(context.Background()); len(out) != 1 {
		t.Fatalf("outbox holds %d", len(out))
	}
	bob := startNode(t, bobHome, alice) // connecting wakes alice's outbox
	waitFor(t, "delivery once bob is online", func() bool {
		h, _ := bob.History(context.Background(), alice.ID().String(), 0)
		return len(h) == 1
	})
	waitFor(t, "alice to see it delivered", func() bool {
		h, _ := alice.History(context.Background(), bob.ID().String(), 0)
		// bob showed the conversation, so it may already be read.
		return len(h) == 1 && (h[0].State == "delivered" || h[0].State == "read")
	})
	if out, _ := alice.Outbox(context.Background()); len(out) != 0 {
		t.Fatalf("outbox still holds %d", len(out))
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	alice := startNode(t, filepath.Join(dir, "alice"))
	other, _ := identity.Generate()
	ctx := context.Background()
	cases := []struct {
		req  api.SendRequest
		want string
	}{
		{api.SendRequest{To: "nobody", Text: "x"}, "neither a contact nor a peer ID"},
		{api.SendRequest{To: "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", Text: "x"}, "Ed25519"},
		{api.SendRequest{To: other.ID().String(), Text: ""}, "empty"},
		{api.SendRequest{To: other.ID().String(), Text: strings.Repeat("x", 40000)}, "limit"},
		{api.SendRequest{To: alice.ID().String(), Text: "me"}, "own peer ID"},
	}
	for _, tc := range cases {
		_, err := alice.Send(ctx, tc.req)
		if err == nil || !api.IsInput(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Send(%q, %d bytes): %v, want an input error about %q", tc.req.To, len(tc.req.Text), err, tc.want)
		}
	}
	otherCard := "/ip4/127.0.0.1/tcp/4001/p2p/" + other.ID().String()
	for _, c := range []api.Contact{
		{Name: "two words", ID: other.ID().String()}, {Name: "x", ID: "bad"}, {Name: "", ID: other.ID().String()},
		{Name: "x", ID: "/ip4/127.0.0.1/tcp/4001"},                                                               // no /p2p/ part
		{Name: "x", ID: "/ip4/nowhere/p2p/" + other.ID().String()},                                               // not an address
		{Name: "x", ID: other.ID().String(), Addrs: []string{"127.0.0.1:4001"}},                                  // not a multiaddr
		{Name: "x", ID: other.ID().String(), Addrs: []string{"/ip4/127.0.0.1/tcp/1/p2p/" + alice.ID().String()}}, // someone else's
	} {
		if _, err := alice.AddContact(ctx, c); err == nil || !api.IsInput(err) {
			t.Errorf("AddContact(%+v): %v", c, err)
		}
	}
	if out, _ := alice.Outbox(ctx); len(out) != 0 {
		t.Fatal("a refused message reached the outbox")
	}
	if _, err := alice.AddContact(ctx, api.Contact{Name: "other", ID: otherCard}); err != nil {
		t.Fatalf("AddContact with a card: %v", err)
	}
}

// TestContactCard: a contact added with the address from its 'parley id'
// is reached directly, with no DHT lookup, even from a node that shares no
// DHT with it (two swarms of one node each).
func TestContactCard(t *testing.T) {
	dir := t.TempDir()
	alice := startNode(t, filepath.Join(dir, "alice"))
	bob := startNode(t, filepath.Join(dir, "bob"))
	ctx := context.Background()
	if _, err := alice.AddContact(ctx, api.Contact{Name: "bob", ID: bob.Addrs()[0].String()}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.AddContact(ctx, api.Contact{Name: "alice", ID: alice.ID().String()}); err != nil {
		t.Fatal(err)
	}
	m := send(t, alice, "bob", "found you")
	if m.State != "delivered" {
		t.Fatalf("message state %q, want delivered", m.State)
	}
	if got := texts(t, bob, "alice"); len(got) != 1 || got[0] != "in:found you" {
		t.Fatalf("bob has %v", got)
	}
	if st := alice.DHTStats(); st.Peer != 0 {
		t.Fatalf("alice looked a peer up %d times; the card had the address", st.Peer)
	}
}

func TestSecondNodeOnSameHomeRefused(t *testing.T) {
	home := filepath.Join(t.TempDir(), "alice")
	startNode(t, home)
	n, err := New(Config{Home: home, Listen: loopback})
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "already running") {
		n.Close()
		t.Fatalf("second Start on one home: %v", err)
	}
}

func TestBootstrapThatDoesNotAnswer(t *testing.T) {
	home := filepath.Join(t.TempDir(), "a")
	identity.Create(home)
	ghost, _ := identity.Generate()
	n, err := New(Config{Home: home, Listen: loopback, Bootstrap: []string{"/ip4/127.0.0.1/tcp/1/p2p/" + ghost.ID().String()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "no bootstrap peer answered") {
		n.Close()
		t.Fatalf("Start with a dead bootstrap: %v", err)
	}
	if _, err := New(Config{Home: home, Bootstrap: []string{"/ip4/127.0.0.1/tcp/1"}}); err == nil {
		t.Fatal("bootstrap address without /p2p/ accepted")
	}
}

// TestInjectedHost: a node can run on a host built by its caller (the
// simulation does this), and leaves that host open on Close.
func TestInjectedHost(t *testing.T) {
	dir := t.TempDir()
	alice := startNode(t, filepath.Join(dir, "alice"))
	id, _ := identity.Generate()
	h, err := libp2p.New(libp2p.Identity(id.PrivKey()), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	n, err := New(Config{Home: filepath.Join(dir, "bob"), Identity: id, Host: h, Bootstrap: []string{alice.Addrs()[0].String()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m := send(t, n, alice.ID().String(), "from an injected host"); m.State != "delivered" {
		t.Fatalf("state %s", m.State)
	}
	n.Close()
	if len(h.Network().ListenAddresses()) == 0 {
		t.Fatal("closing the node closed the injected host")
	}
	other, _ := identity.Generate()
	if _, err := New(Config{Home: dir, Identity: other, Host: h}); err == nil {
		t.Fatal("a host with another key was accepted")
	}
}

func TestQUIC(t *testing.T) {
	dir := t.TempDir()
	quic := []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	var nodes []*Node
	for _, name := range []string{"a", "b"} {
		home := filepath.Join(dir, name)
		identity.Create(home)
		var boot []string
		if len(nodes) > 0 {
			boot = []string{nodes[0].Addrs()[0].String()}
		}
		n, err := New(Config{Home: home, Listen: quic, Bootstrap: boot})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		nodes = append(nodes, n)
	}
	if !strings.Contains(nodes[0].Addrs()[0].String(), "/quic-v1") {
		t.Fatalf("not on QUIC: %v", nodes[0].Addrs())
	}
	if m := send(t, nodes[1], nodes[0].ID().String(), "over quic"); m.State != "delivered" {
		t.Fatalf("state %s", m.State)
	}
	conns := nodes[1].Host().Network().ConnsToPeer(nodes[0].ID())
	if len(conns) == 0 || !strings.Contains(conns[0].RemoteMultiaddr().String(), "quic") {
		t.Fatalf("connection is not QUIC: %v", conns)
	}
}
