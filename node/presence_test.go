package node

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/presence"
)

// swarm starts n nodes that join through the first, with presence tuned for
// tests: no republish during the test (so anything seen came from a change
// or a NOTIFY) and quick retries while the swarm forms.
func swarm(t *testing.T, n int, tune func(i int, c *Config)) []*Node {
	t.Helper()
	dir := t.TempDir()
	var nodes []*Node
	for i := range n {
		home := filepath.Join(dir, fmt.Sprint("n", i))
		if _, err := identity.Create(home); err != nil {
			t.Fatal(err)
		}
		cfg := Config{Home: home, Listen: loopback}
		cfg.Presence.Republish = time.Hour
		cfg.Presence.Retry = 500 * time.Millisecond
		if i > 0 {
			cfg.Bootstrap = []string{nodes[0].Addrs()[0].String()}
		}
		if tune != nil {
			tune(i, &cfg)
		}
		nodes = append(nodes, started(t, cfg))
	}
	return nodes
}

// befriend makes a and b contacts of each other.
func befriend(t *testing.T, a, b *Node, aName, bName string) {
	t.Helper()
	ctx := context.Background()
	if _, err := a.AddContact(ctx, api.Contact{Name: bName, ID: b.ID().String()}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddContact(ctx, api.Contact{Name: aName, ID: a.ID().String()}); err != nil {
		t.Fatal(err)
	}
}

func whois(t *testing.T, n, of *Node) api.Presence {
	t.Helper()
	p, err := n.Whois(context.Background(), of.ID().String())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func setStatus(t *testing.T, n *Node, status, note string) {
	t.Helper()
	if _, err := n.SetStatus(context.Background(), api.StatusRequest{Status: status, Note: note}); err != nil {
		t.Fatal(err)
	}
}

// waitStored waits until a record of n's signed after since is stored in
// the DHT: what a lookup finds from then on. (A record's seq is its signing
// time in milliseconds.)
func waitStored(t *testing.T, n *Node, since time.Time) {
	t.Helper()
	waitFor(t, "a newer record to be stored", func() bool {
		st, _ := n.MyStatus(context.Background())
		return st.Seq >= uint64(since.UnixMilli()) && st.Accepted > 0
	})
}

// cached is what n holds of p's presence without asking the network.
func cached(n, p *Node) presence.View {
	v, _ := n.presence.Cached(p.ID())
	return v
}

func TestPresenceSwarm(t *testing.T) {
	nodes := swarm(t, 22, nil)
	ctx := context.Background()
	pub := nodes[5]

	t.Run("one publishes, every other resolves", func(t *testing.T) {
		if _, err := pub.SetVisibility(ctx, "everyone"); err != nil {
			t.Fatal(err)
		}
		setStatus(t, pub, "away", "gone fishing")
		// The change is published in the background: every node resolves
		// it once it is stored.
		for i, n := range nodes {
			if n == pub {
				continue
			}
			waitFor(t, fmt.Sprint("node ", i, " to resolve the record"), func() bool {
				p := whois(t, n, pub)
				return p.Status == "away" && p.Note == "gone fishing" && len(p.Addrs) > 0
			})
		}
		if st, _ := pub.MyStatus(ctx); st.Accepted < 3 {
			t.Fatalf("only %d of %d DHT peers stored the record", st.Accepted, st.Asked)
		}
	})

	t.Run("a change reaches a watcher by NOTIFY", func(t *testing.T) {
		w := nodes[6]
		befriend(t, pub, w, "pub", "w")
		// Both ends must agree the subscription stands, or a late SUBSCRIBE
		// answer could carry the change before the NOTIFY does.
		waitFor(t, "w to subscribe to pub", func() bool {
			return pub.presence.Watchers() > 0 && w.presence.Watching(pub.ID())
		})
		setStatus(t, pub, "busy", "in a call")
		waitFor(t, "the NOTIFY", func() bool {
			v := cached(w, pub)
			return v.Status == presence.Busy && v.Note == "in a call"
		})
		if v := cached(w, pub); v.Source != "notify" {
			t.Fatalf("w learnt the change from %q, not a NOTIFY", v.Source)
		}
	})

	t.Run("rollback rejected", func(t *testing.T) {
		// Make sure every peer near the key holds the newest record (storing
		// the same bytes again is accepted: it refreshes them)...
		cur := pub.presence.Current()
		if accepted, asked, err := nodes[9].dht.Put(ctx, presence.Key(pub.ID()), cur); err != nil || accepted != len(asked) {
			t.Fatalf("re-storing the current record: %d of %d, %v", accepted, len(asked), err)
		}
		// ...then every one of them must refuse an older one.
		rec, _ := presence.Parse(cur)
		old := &pb.PresenceRecord{PeerId: []byte(pub.ID()), Seq: rec.Seq - 1000, ExpiresAt: time.Now().Add(time.Hour).UnixMilli()}
		presence.SetBody(old, &pb.PresenceBody{Status: pb.Status_ONLINE, Note: "rolled back"}, nil)
		presence.Sign(old, pub.id.PrivKey())
		raw, _ := proto.Marshal(old)
		accepted, asked, err := nodes[9].dht.Put(ctx, presence.Key(pub.ID()), raw)
		if err != nil {
			t.Fatal(err)
		}
		if accepted != 0 {
			t.Fatalf("%d of %d DHT peers accepted an older record", accepted, len(asked))
		}
		if p := whois(t, nodes[10], pub); p.Note == "rolled back" {
			t.Fatal("a rolled-back record is resolved")
		}
	})

	t.Run("a stock kad-dht client reads a record as documented", func(t *testing.T) {
		stockReadsRecord(t, nodes[0], pub)
	})
}

// stockReadsRecord fetches pub's record with plain go-libp2p-kad-dht (the
// /parley prefix and only the presence validator), then checks it the way
// docs/protocol.md describes, without the presence package's helpers.
func stockReadsRecord(t *testing.T, boot, pub *Node) {
	ctx := context.Background()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	d, err := kaddht.New(h, kaddht.ProtocolPrefix("/parley"), kaddht.Mode(kaddht.ModeClient),
		kaddht.Validator(record.NamespacedValidator{"presence": presence.Validator{}}),
		kaddht.BootstrapPeers(peer.AddrInfo{ID: boot.ID(), Addrs: boot.Host().Addrs()}))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := h.Connect(ctx, peer.AddrInfo{ID: boot.ID(), Addrs: boot.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stock client's routing table", func() bool { return d.RoutingTable().Size() > 0 })
	// A DHT read is eventually consistent: under load a lookup whose
	// requests time out may end with an older copy from a peer outside the
	// closest. Read until the current record comes back, then check it.
	cur, _ := presence.Parse(pub.presence.Current())
	var rec pb.PresenceRecord
	waitFor(t, "the stock client to read the current record", func() bool {
		raw, err := d.GetValue(ctx, "/presence/"+string(pub.ID()))
		if err != nil {
			t.Fatal(err)
		}
		if err := proto.Unmarshal(raw, &rec); err != nil {
			t.Fatal(err)
		}
		return rec.Seq >= cur.Seq
	})
	// docs/protocol.md §7.1: the signed bytes.
	msg := []byte("parley/presence/v1")
	msg = binary.AppendUvarint(msg, uint64(len(rec.PeerId)))
	msg = append(msg, rec.PeerId...)
	msg = binary.BigEndian.AppendUint64(msg, rec.Seq)
	msg = binary.BigEndian.AppendUint64(msg, uint64(rec.ExpiresAt))
	sealed := byte(0)
	if rec.Sealed {
		sealed = 1
	}
	msg = append(msg, sealed)
	msg = binary.AppendUvarint(msg, uint64(len(rec.KeyId)))
	msg = append(msg, rec.KeyId...)
	msg = binary.AppendUvarint(msg, uint64(len(rec.Body)))
	msg = append(msg, rec.Body...)
	pk, _ := pub.ID().ExtractPublicKey()
	if ok, err := pk.Verify(msg, rec.Signature); !ok || err != nil {
		t.Fatalf("signature does not verify as documented: %v", err)
	}
	var body pb.PresenceBody
	if rec.Sealed || proto.Unmarshal(rec.Body, &body) != nil || body.Status != pb.Status_BUSY {
		t.Fatalf("record body: sealed=%v %v", rec.Sealed, &body)
	}
}

func TestHiddenFromOne(t *testing.T) {
	nodes := swarm(t, 6, nil)
	ctx := context.Background()
	oscar, alex, bob, carol := nodes[2], nodes[3], nodes[4], nodes[5]
	befriend(t, oscar, alex, "oscar", "alex")
	befriend(t, oscar, bob, "oscar", "bob")
	befriend(t, oscar, carol, "oscar", "carol")
	waitFor(t, "bob to see oscar", func() bool { return whois(t, bob, oscar).Status == "online" })

	if err := oscar.SetAccess(ctx, "alex", "deny"); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	setStatus(t, oscar, "online", "hi friends")
	waitFor(t, "bob to see the new note", func() bool { return whois(t, bob, oscar).Note == "hi friends" })
	waitStored(t, oscar, changed)
	if p := whois(t, alex, oscar); p.Status != "offline" || p.Note != "" || len(p.Addrs) != 0 {
		t.Fatalf("alex sees %+v, want exactly what an offline user shows", p)
	}
	// Alex holds a key, but not the one that seals the record now.
	raw, err := alex.presence.DHTValue(ctx, oscar.ID())
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := presence.Parse(raw)
	if !rec.Sealed {
		t.Fatal("oscar's record is not sealed")
	}
	if _, err := presence.OpenBody(rec, alex.presence.KeyOf(oscar.ID())); err == nil {
		t.Fatal("alex can open oscar's record")
	}
	// Oscar refuses alex's connections: one that alex dials is closed as
	// soon as the handshake names alex. (Oscar may still dial alex for its
	// own DHT lookups; a stream over such a connection would prove nothing,
	// so only a connection alex dialled counts.)
	for try := 0; ; try++ {
		if try == 50 {
			t.Fatal("every dial from alex found a connection oscar had made")
		}
		alex.Host().Network().ClosePeer(oscar.ID())
		c, err := alex.Host().Network().DialPeer(ctx, oscar.ID())
		if err != nil {
			break // refused before alex's side was done: as good
		}
		if c.Stat().Direction == network.DirOutbound {
			waitFor(t, "oscar to close the connection alex dialled", c.IsClosed)
			break
		}
	}

	// Revoking bob rotates the key: carol still sees oscar, bob no longer.
	before := oscar.presence.OwnKeyID()
	if err := oscar.SetAccess(ctx, "bob", "deny"); err != nil {
		t.Fatal(err)
	}
	if after := oscar.presence.OwnKeyID(); string(after) == string(before) {
		t.Fatal("revoking bob did not rotate the key")
	}
	changed = time.Now()
	setStatus(t, oscar, "busy", "after rotation")
	waitStored(t, oscar, changed)
	waitFor(t, "carol to get the new key and see oscar", func() bool {
		p := whois(t, carol, oscar)
		return p.Status == "busy" && p.Note == "after rotation"
	})
	if p := whois(t, bob, oscar); p.Status != "offline" || p.Note != "" {
		t.Fatalf("revoked bob sees %+v", p)
	}

	// A clean shutdown tells the watchers at once.
	waitFor(t, "carol to watch oscar", func() bool { return oscar.presence.Watchers() > 0 })
	oscar.Close()
	waitFor(t, "carol to see oscar offline", func() bool { return cached(carol, oscar).Status == presence.Offline })
}

func TestCrashedNodeExpires(t *testing.T) {
	var skew atomic.Int64
	nodes := swarm(t, 5, func(i int, c *Config) {
		c.Presence.Lifetime = 5 * time.Second
		if i == 4 {
			c.Presence.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
		}
	})
	ctx := context.Background()
	gone, looker := nodes[2], nodes[4]
	if _, err := gone.SetVisibility(ctx, "everyone"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the record to be stored", func() bool {
		st, _ := gone.MyStatus(ctx)
		return st.Accepted > 0
	})
	waitFor(t, "looker to see it", func() bool { return whois(t, looker, gone).Status == "online" })
	// A crash: the host vanishes, nothing is published on the way out.
	gone.host.Close()
	gone.Close()
	// Past the lifetime and the skew allowance (on the looker's clock) the
	// record still held in the DHT no longer counts.
	skew.Store(int64(5*time.Second + presence.ClockSkew + time.Second))
	if p := whois(t, looker, gone); p.Status != "offline" {
		t.Fatalf("an expired record is shown as %+v", p)
	}
}

func TestContactRequestsAndBlocking(t *testing.T) {
	nodes := swarm(t, 3, nil)
	ctx := context.Background()
	me, stranger := nodes[1], nodes[2]
	if m := send(t, stranger, me.ID().String(), "hi, we met at the conference"); m.State != "delivered" {
		t.Fatalf("state %s", m.State)
	}
	rs, _ := me.Requests(ctx)
	if len(rs) != 1 || rs[0].Peer != stranger.ID().String() || rs[0].Messages != 1 {
		t.Fatalf("requests %+v", rs)
	}
	if err := me.AnswerRequest(ctx, stranger.ID().String(), "block", ""); err != nil {
		t.Fatal(err)
	}
	if rs, _ := me.Requests(ctx); len(rs) != 0 {
		t.Fatalf("requests after block: %+v", rs)
	}
	// The blocked peer cannot connect: its message goes to the replicas,
	// and me drops it when collecting.
	m, err := stranger.Send(ctx, api.SendRequest{To: me.ID().String(), Text: "hello?", WaitMillis: 5000})
	if err != nil || m.State != "stored" {
		t.Fatalf("a blocked peer's message: %+v %v", m, err)
	}
	if _, err := me.collect.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _ := me.History(ctx, stranger.ID().String(), 0); len(h) != 1 {
		t.Fatalf("me has %d messages from the blocked peer, want only the first", len(h))
	}
	if err := me.AnswerRequest(ctx, stranger.ID().String(), "accept", "x"); err == nil {
		t.Fatal("accepting a request that is gone succeeded")
	}
}

// TestNewContactReadsTheRecordOutThere: adding a contact hands it the
// current presence key and stores no new record (the one in the DHT is
// sealed with that key); removing one rotates the key and republishes.
func TestNewContactReadsTheRecordOutThere(t *testing.T) {
	nodes := swarm(t, 4, nil)
	ctx := context.Background()
	alice, bob, carol := nodes[1], nodes[2], nodes[3]
	befriend(t, alice, bob, "alice", "bob")
	waitFor(t, "bob to see alice online", func() bool { return whois(t, bob, alice).Status == "online" })
	seq := func() uint64 { st, _ := alice.MyStatus(ctx); return st.Seq }
	before := seq()
	befriend(t, alice, carol, "alice", "carol")
	waitFor(t, "carol to see alice online", func() bool { return whois(t, carol, alice).Status == "online" })
	if got := seq(); got != before {
		t.Fatalf("adding a contact republished: seq %d -> %d", before, got)
	}
	if err := alice.RemoveContact(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new record sealed with a new key", func() bool { return seq() > before })
}

// TestDeniedDoesNotRedial: a peer that denied us refuses our connections,
// but only after our side of the handshake is done, so each dial shows us
// a connection for a moment. Acting on such a connection (subscribing,
// delivering what waits) must not dial again: that loops as fast as
// handshakes go, for as long as both nodes run.
func TestDeniedDoesNotRedial(t *testing.T) {
	nodes := swarm(t, 3, nil)
	ctx := context.Background()
	oscar, alex := nodes[1], nodes[2]
	befriend(t, oscar, alex, "oscar", "alex")
	waitFor(t, "alex to see oscar", func() bool { return whois(t, alex, oscar).Status == "online" })
	if err := oscar.SetAccess(ctx, "alex", "deny"); err != nil {
		t.Fatal(err)
	}
	// Something waits for oscar in alex's outbox, too.
	if m := send(t, alex, "oscar", "are you there?"); m.State == "delivered" {
		t.Fatal("a denied peer delivered directly")
	}
	var dials atomic.Int64
	alex.Host().Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if c.RemotePeer() == oscar.ID() && c.Stat().Direction == network.DirOutbound {
			dials.Add(1)
		}
	}})
	for range 5 {
		alex.Host().Network().ClosePeer(oscar.ID())
		alex.Host().Connect(ctx, peer.AddrInfo{ID: oscar.ID(), Addrs: oscar.Addrs()})
	}
	// A loop makes hundreds of connections a second; the outbox's own
	// retries (backing off from a second) make a few.
	time.Sleep(3 * time.Second)
	if n := dials.Load(); n > 5+10 {
		t.Fatalf("alex dialled oscar %d times in 3 s after 5 connections", n)
	}
}

// TestRestartWatchesWhereContactsWere: a node that stops saves where its
// contacts were, and when it starts again it subscribes to a contact still
// there without looking its record up in the DHT; one that moved meanwhile
// it finds through the DHT, after its old address fails. Bob is a DHT
// client, so that none of alice's own walks meets him on the way.
func TestRestartWatchesWhereContactsWere(t *testing.T) {
	for _, moved := range []bool{false, true} {
		t.Run(fmt.Sprint("moved=", moved), func(t *testing.T) {
			client := func(c *Config) { c.DHTMode = "client" }
			nodes := swarm(t, 4, func(i int, c *Config) {
				if i == 2 {
					client(c)
				}
			})
			alice, bob := nodes[1], nodes[2]
			befriend(t, alice, bob, "alice", "bob")
			waitFor(t, "alice to watch bob", func() bool { return alice.presence.Watching(bob.ID()) })
			restart := func(n *Node, tune func(*Config)) *Node {
				t.Helper()
				if err := n.Close(); err != nil {
					t.Fatal(err)
				}
				cfg := Config{Home: n.cfg.Home, Listen: loopback, Bootstrap: []string{nodes[0].Addrs()[0].String()}}
				tune(&cfg)
				return started(t, cfg)
			}
			alice.Close() // first: so that bob, if he moves, cannot tell her where
			if moved {
				bob = restart(bob, client) // on a new port
				waitStored(t, bob, time.Now().Add(-time.Second))
			}
			alice = restart(alice, func(*Config) {})
			waitFor(t, "alice, back, to watch bob", func() bool { return alice.presence.Watching(bob.ID()) })
			wantSource, wantLookups := "subscribe", int64(0)
			if moved {
				wantSource, wantLookups = "dht", 1
			}
			if v := cached(alice, bob); v.Status != presence.Online || v.Source != wantSource {
				t.Errorf("alice, back, sees bob %s from %q; want online from %q", v.Status, v.Source, wantSource)
			}
			if n := alice.DHTStats().Value; n != wantLookups {
				t.Errorf("alice, back, looked records up in the DHT %d times; want %d", n, wantLookups)
			}
		})
	}
}
