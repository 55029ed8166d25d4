package dht

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/presence"
)

func randomIDs(t testing.TB, n int) []peer.ID {
	t.Helper()
	ids := make([]peer.ID, n)
	for i := range ids {
		_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if ids[i], err = peer.IDFromPublicKey(pub); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// nearest is the n of ids nearest target, by XOR distance.
func nearest(target kb.ID, ids []peer.ID, n int) []peer.ID {
	s := slices.Clone(ids)
	slices.SortFunc(s, func(a, b peer.ID) int {
		return bytes.Compare(xor(target, kb.ConvertPeerID(a)), xor(target, kb.ConvertPeerID(b)))
	})
	return s[:min(n, len(s))]
}

// kademlia is a model swarm: each peer's routing table holds up to 20
// peers of every bucket (by common prefix length with it), and a peer asked
// for a target answers with the 20 of its table nearest that target.
type kademlia struct {
	table map[peer.ID][]peer.ID
	gone  map[peer.ID]bool
}

func newKademlia(ids []peer.ID, r *mrand.Rand) *kademlia {
	k := &kademlia{table: map[peer.ID][]peer.ID{}, gone: map[peer.ID]bool{}}
	for _, p := range ids {
		buckets := map[int]int{}
		for _, i := range r.Perm(len(ids)) {
			q := ids[i]
			if q == p {
				continue
			}
			b := kb.CommonPrefixLen(kb.ConvertPeerID(p), kb.ConvertPeerID(q))
			if buckets[b] < 20 {
				buckets[b]++
				k.table[p] = append(k.table[p], q)
			}
		}
	}
	return k
}

// run walks to target from the given seeds, answering each request at once,
// and returns the result and the number of requests made.
func (k *kademlia) run(target kb.ID, seeds []peer.ID, answer func(q peer.ID) []peer.ID) ([]peer.ID, int) {
	w := newWalk(target, Neighbourhood, "")
	w.hear(seeds)
	asked := 0
	for {
		qs := w.next(alpha)
		if len(qs) == 0 {
			break
		}
		for _, q := range qs {
			asked++
			if k.gone[q] {
				w.failed(q)
			} else {
				w.answered(q, answer(q))
			}
		}
	}
	if !w.done() {
		return nil, asked
	}
	return w.result(), asked
}

// TestWalkFindsNeighbourhood: in a model swarm of 300 peers, a tenth of them
// gone without a word, a walk from a few far peers finds exactly the
// Neighbourhood peers nearest each target that are still up, with a bounded
// number of requests.
func TestWalkFindsNeighbourhood(t *testing.T) {
	r := mrand.New(mrand.NewPCG(1, 2))
	ids := randomIDs(t, 300)
	k := newKademlia(ids, r)
	var up []peer.ID
	for _, p := range ids {
		if r.IntN(10) == 0 {
			k.gone[p] = true
		} else {
			up = append(up, p)
		}
	}
	total := 0
	const targets = 50
	for i := range targets {
		target := kb.ConvertKey(fmt.Sprint("/presence/", i))
		var seeds []peer.ID
		for len(seeds) < 5 {
			seeds = append(seeds, ids[r.IntN(len(ids))])
		}
		got, asked := k.run(target, seeds, func(q peer.ID) []peer.ID { return nearest(target, k.table[q], 20) })
		if want := nearest(target, up, Neighbourhood); !slices.Equal(got, want) {
			t.Fatalf("target %d: found %v, want %v", i, got, want)
		}
		total += asked
	}
	// Each target's neighbourhood is asked once; reaching it takes a few
	// requests more. kad-dht's lookup makes about 27 for 20 peers.
	if avg := float64(total) / targets; avg > 2*Neighbourhood {
		t.Errorf("%.1f requests per walk, want at most %d", avg, 2*Neighbourhood)
	} else {
		t.Logf("%.1f requests per walk", avg)
	}
}

// TestWalkSmallSwarm: with fewer peers than a neighbourhood, the walk ends
// once every peer up has answered, and finds them all.
func TestWalkSmallSwarm(t *testing.T) {
	ids := randomIDs(t, 5)
	k := newKademlia(ids, mrand.New(mrand.NewPCG(3, 4)))
	k.gone[ids[4]] = true
	target := kb.ConvertKey("/presence/x")
	got, _ := k.run(target, ids[:1], func(q peer.ID) []peer.ID { return k.table[q] })
	if want := nearest(target, ids[:4], Neighbourhood); !slices.Equal(got, want) {
		t.Fatalf("found %v, want %v", got, want)
	}
}

// TestWalkStalled: a peer among the nearest that is slow to answer no
// longer holds the walk up once stalled: the next nearest is asked in its
// place, the walk can end without it, and its late answer still counts.
func TestWalkStalled(t *testing.T) {
	ids := randomIDs(t, Neighbourhood+2)
	target := kb.ConvertKey("/presence/x")
	order := nearest(target, ids, len(ids))
	w := newWalk(target, Neighbourhood, "")
	w.hear(ids)
	asked := w.next(len(ids))
	if !slices.Equal(asked, order[:Neighbourhood]) {
		t.Fatalf("asked %v, want the %d nearest", asked, Neighbourhood)
	}
	slow := order[0]
	for _, p := range asked[1:] {
		w.answered(p, nil)
	}
	if w.done() {
		t.Fatal("done while the nearest peer has not answered")
	}
	if !w.stall(slow) || w.stall(slow) {
		t.Fatal("stall should report a waiting peer once")
	}
	if got := w.next(len(ids)); !slices.Equal(got, order[Neighbourhood:Neighbourhood+1]) {
		t.Fatalf("after a stall asked %v, want the next nearest %v", got, order[Neighbourhood])
	}
	w.answered(order[Neighbourhood], nil)
	if !w.done() || !slices.Equal(w.result(), order[1:Neighbourhood+1]) {
		t.Fatalf("done %v with %v, want the nearest but the stalled one", w.done(), w.result())
	}
	w.answered(slow, nil) // late, but an answer
	if !slices.Equal(w.result(), order[:Neighbourhood]) {
		t.Fatalf("after the late answer: %v, want the %d nearest", w.result(), Neighbourhood)
	}
}

// TestWalkBounded: peers that answer every request with new, ever nearer
// peers (made up to hold the walk) get no more than maxAsked requests
// from it.
func TestWalkBounded(t *testing.T) {
	target := kb.ConvertKey("/presence/x")
	pool := randomIDs(t, 2000)
	slices.SortFunc(pool, func(a, b peer.ID) int {
		return -bytes.Compare(xor(target, kb.ConvertPeerID(a)), xor(target, kb.ConvertPeerID(b)))
	})
	next := 1 // pool is farthest first: each answer names the next 20, nearer
	k := &kademlia{gone: map[peer.ID]bool{}}
	_, asked := k.run(target, pool[:1], func(peer.ID) []peer.ID {
		out := pool[next:min(next+20, len(pool))]
		next += 20
		return out
	})
	if asked > maxAsked {
		t.Fatalf("%d requests, want at most %d", asked, maxAsked)
	}
}

// TestClosest: over real hosts, a client that knows two servers finds the
// Neighbourhood servers nearest a key; servers that went away are left out
// of the answer and of its routing table.
func TestClosest(t *testing.T) {
	const n = 20
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	servers, dhts := meshServers(ctx, t, n)
	cd := clientOf(ctx, t, servers[:2])
	ids := idsOf(servers)
	key := "/presence/somebody"
	target := kb.ConvertKey(key)
	got, err := cd.Closest(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if want := nearest(target, ids, Neighbourhood); !slices.Equal(got, want) {
		t.Fatalf("found %v, want %v", got, want)
	}
	// Two of the nearest go away; the client still holds their addresses,
	// and has them in its routing table (it met them in the walk).
	for cd.RoutingTable().Find(got[0]) == "" || cd.RoutingTable().Find(got[1]) == "" {
		if ctx.Err() != nil {
			t.Fatal("the nearest servers never entered the client's routing table")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var left []peer.ID
	for i, h := range servers {
		if h.ID() == got[0] || h.ID() == got[1] {
			dhts[i].Close()
			h.Close()
			continue
		}
		left = append(left, h.ID())
	}
	got2, err := cd.Closest(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if want := nearest(target, left, Neighbourhood); !slices.Equal(got2, want) {
		t.Fatalf("with two gone found %v, want %v", got2, want)
	}
	for _, p := range got[:2] {
		if cd.RoutingTable().Find(p) != "" {
			t.Errorf("%s went away but is still in the routing table", p)
		}
	}
	if s := cd.Stats(); s.Closest != 2 {
		t.Errorf("counted %d lookups, want 2", s.Closest)
	}
}

// meshServers starts n DHT servers that never refresh, each connected to
// every other, and waits until every routing table holds all the others.
func meshServers(ctx context.Context, t *testing.T, n int) ([]host.Host, []*DHT) {
	t.Helper()
	servers := make([]host.Host, n)
	dhts := make([]*DHT, n)
	for i := range servers {
		servers[i] = newHost(t)
		d, err := New(servers[i], Config{Mode: Server, Refresh: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		dhts[i] = d
	}
	for i, h := range servers {
		for _, o := range servers[i+1:] {
			if err := h.Connect(ctx, peer.AddrInfo{ID: o.ID(), Addrs: o.Addrs()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, d := range dhts {
		for d.RoutingTable().Size() < n-1 {
			if ctx.Err() != nil {
				t.Fatalf("a routing table holds %d of %d servers", d.RoutingTable().Size(), n-1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return servers, dhts
}

// clientOf starts a DHT client connected to the given servers, and waits
// until its routing table holds them.
func clientOf(ctx context.Context, t *testing.T, servers []host.Host) *DHT {
	t.Helper()
	client := newHost(t)
	cd, err := New(client, Config{Mode: Client})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cd.Close() })
	for _, s := range servers {
		if err := client.Connect(ctx, peer.AddrInfo{ID: s.ID(), Addrs: s.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	for cd.RoutingTable().Size() < len(servers) {
		if ctx.Err() != nil {
			t.Fatalf("the client's routing table never held its %d servers", len(servers))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cd
}

func idsOf(hosts []host.Host) []peer.ID {
	ids := make([]peer.ID, len(hosts))
	for i, h := range hosts {
		ids[i] = h.ID()
	}
	return ids
}

// TestBootstrapRefresh: a server that joins through one peer and
// bootstraps walks its way to its neighbourhood: its routing table then
// holds the servers nearest it, and theirs hold it.
func TestBootstrapRefresh(t *testing.T) {
	const n = 20
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	servers, dhts := meshServers(ctx, t, n)
	h := newHost(t)
	d, err := New(h, Config{Mode: Server})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// Join through the server farthest from the newcomer, so that nothing
	// near it is known at first.
	ids := idsOf(servers)
	far := slices.Index(ids, nearest(kb.ConvertPeerID(h.ID()), ids, n)[n-1])
	if err := h.Connect(ctx, peer.AddrInfo{ID: ids[far], Addrs: servers[far].Addrs()}); err != nil {
		t.Fatal(err)
	}
	for d.RoutingTable().Size() == 0 {
		if ctx.Err() != nil {
			t.Fatal("the bootstrap peer never entered the routing table")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := d.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	near := nearest(kb.ConvertPeerID(h.ID()), ids, Neighbourhood)
	for _, p := range near {
		for d.RoutingTable().Find(p) == "" {
			if ctx.Err() != nil {
				t.Fatalf("after the refresh the routing table holds %d peers, not %s, one of the %d nearest",
					d.RoutingTable().Size(), p, Neighbourhood)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for i, s := range servers {
		if !slices.Contains(near, s.ID()) {
			continue
		}
		for dhts[i].RoutingTable().Find(h.ID()) == "" {
			if ctx.Err() != nil {
				t.Fatalf("%s, near the newcomer, never added it to its routing table", s.ID())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// signedRecord is a valid presence record of a new identity with the given
// seq, and its key.
func signedRecord(t *testing.T, priv crypto.PrivKey, seq uint64) (string, []byte) {
	t.Helper()
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	rec := &pb.PresenceRecord{PeerId: []byte(id), Seq: seq, ExpiresAt: time.Now().Add(time.Hour).UnixMilli()}
	if err := presence.SetBody(rec, &pb.PresenceBody{Status: pb.Status_ONLINE}, nil); err != nil {
		t.Fatal(err)
	}
	if err := presence.Sign(rec, priv); err != nil {
		t.Fatal(err)
	}
	raw, err := proto.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	return presence.Key(id), raw
}

// TestGetValue: a client's value walk finds the newest record stored at a
// key's neighbourhood, also when only two peers hold it (the walk then
// asks the whole neighbourhood), and says not found for a key nobody
// stored.
func TestGetValue(t *testing.T) {
	const n = 20
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	servers, dhts := meshServers(ctx, t, n)
	cd := clientOf(ctx, t, servers[:2])
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 2; seq++ {
		key, raw := signedRecord(t, priv, seq)
		if accepted, asked, err := dhts[5].Put(ctx, key, raw); err != nil || accepted < len(asked) || len(asked) != Neighbourhood {
			t.Fatalf("put seq %d: %d of %d accepted (%v)", seq, accepted, len(asked), err)
		}
		got, err := cd.GetValue(ctx, key)
		if err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("seq %d: got %x (%v), want the record just stored", seq, got, err)
		}
	}
	// Held by two peers only, both near the key: fewer than the quorum.
	other, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, raw := signedRecord(t, other, 1)
	ids := idsOf(servers)
	// putTo stores from a server that is not one of the holders (a PUT to
	// itself fails).
	putTo := func(key string, raw []byte, holders []peer.ID) {
		t.Helper()
		for i, s := range servers {
			if !slices.Contains(holders, s.ID()) {
				if got := dhts[i].PutTo(ctx, key, raw, holders); got != len(holders) {
					t.Fatalf("%d of %d holders took the record", got, len(holders))
				}
				return
			}
		}
	}
	putTo(key, raw, nearest(kb.ConvertKey(key), ids, Neighbourhood)[2:4])
	if got, err := cd.GetValue(ctx, key); err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("a record held by two: got %x (%v)", got, err)
	}
	// Held by two just outside the neighbourhood, as when the publisher's
	// walk ended a little short: the lookup goes on and finds it.
	far, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, raw = signedRecord(t, far, 1)
	putTo(key, raw, nearest(kb.ConvertKey(key), ids, wideNeighbourhood)[Neighbourhood:Neighbourhood+2])
	if got, err := cd.GetValue(ctx, key); err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("a record held just outside the neighbourhood: got %x (%v)", got, err)
	}
	nobody, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, _ = signedRecord(t, nobody, 1)
	before := cd.Stats().Widened
	if _, err := cd.GetValue(ctx, key); !errors.Is(err, routing.ErrNotFound) {
		t.Fatalf("a key nobody stored: %v, want not found", err)
	}
	if s := cd.Stats(); s.Value != 5 || s.Widened != before+1 || s.Closest != 0 {
		t.Errorf("counted %d value lookups (%d widened, %d by the last) and %d others, want 5 (1 by the last) and 0",
			s.Value, s.Widened, s.Widened-before, s.Closest)
	}
}

// TestClosestSharesAWalk: a caller asking for a key while a walk to it is
// under way gets that walk's answer and walks nowhere itself; one whose
// shared walk was cut short by the other caller's context walks on its
// own.
func TestClosestSharesAWalk(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	servers, _ := meshServers(ctx, t, 10)
	cd := clientOf(ctx, t, servers[:2])
	key := "/presence/somebody"
	want := nearest(kb.ConvertKey(key), idsOf(servers), Neighbourhood)

	// A walk under way (another caller's): wait for its answer.
	share := func(closest []peer.ID, err error) ([]peer.ID, error) {
		w := &sharedWalk{done: make(chan struct{})}
		cd.walksMu.Lock()
		cd.walks[key] = w
		cd.walksMu.Unlock()
		type result struct {
			closest []peer.ID
			err     error
		}
		got := make(chan result, 1)
		go func() {
			c, err := cd.Closest(ctx, key)
			got <- result{c, err}
		}()
		select {
		case r := <-got:
			t.Fatalf("Closest returned %v, %v before the walk it shares ended", r.closest, r.err)
		case <-time.After(50 * time.Millisecond):
		}
		w.closest, w.err = closest, err
		cd.walksMu.Lock()
		delete(cd.walks, key)
		cd.walksMu.Unlock()
		close(w.done)
		r := <-got
		return r.closest, r.err
	}
	other := []peer.ID{servers[0].ID()}
	if got, err := share(other, nil); err != nil || !slices.Equal(got, other) {
		t.Fatalf("sharing a walk: %v, %v; want its answer %v", got, err, other)
	}
	if got, err := share(nil, errNoAnswer); !errors.Is(err, errNoAnswer) || got != nil {
		t.Fatalf("sharing a walk that failed: %v, %v; want its error", got, err)
	}
	if s := cd.Stats(); s.Closest != 0 {
		t.Fatalf("%d walks made while sharing, want 0", s.Closest)
	}
	// The other caller gave up: walk.
	if got, err := share(nil, context.Canceled); err != nil || !slices.Equal(got, want) {
		t.Fatalf("after a shared walk was cancelled: %v, %v; want %v", got, err, want)
	}
	if s := cd.Stats(); s.Closest != 1 {
		t.Fatalf("%d walks made after a shared walk was cancelled, want 1", s.Closest)
	}

	// Callers at once: no more walks than callers, and the same answer.
	const callers = 4
	var wg sync.WaitGroup
	answers := make([][]peer.ID, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i], _ = cd.Closest(ctx, key)
		}()
	}
	wg.Wait()
	for i, a := range answers {
		if !slices.Equal(a, want) {
			t.Fatalf("caller %d found %v, want %v", i, a, want)
		}
	}
	t.Logf("%d callers at once made %d walks", callers, cd.Stats().Closest-1)
}
