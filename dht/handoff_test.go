package dht

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestHandoff: a server that holds a record and meets a newcomer in the
// record's neighbourhood stores the record there, as Kademlia's rule has
// it; the holder nearest the key hands it on, and a holder far from the
// key, which meets the newcomer too, leaves it to those near.
func TestHandoff(t *testing.T) {
	const n = 12
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	servers, dhts := meshServers(ctx, t, n)
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, raw := signedRecord(t, priv, 1)
	ids := idsOf(servers)
	byDistance := nearest(kb.ConvertKey(key), ids, n)
	near, far := slices.Index(ids, byDistance[0]), slices.Index(ids, byDistance[n-1])
	from := slices.Index(ids, byDistance[1]) // a PUT to itself fails
	if got := dhts[from].PutTo(ctx, key, raw, []peer.ID{ids[near], ids[far]}); got != 2 {
		t.Fatalf("%d of 2 holders took the record", got)
	}

	// The newcomer is nearer the key than every server.
	var newKey crypto.PrivKey
	for newKey == nil {
		k, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if id, _ := peer.IDFromPrivateKey(k); kb.Closer(id, ids[near], key) {
			newKey = k
		}
	}
	h := newHost(t, libp2p.Identity(newKey))
	d, err := New(h, Config{Mode: Server, Refresh: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, i := range []int{far, near} {
		if err := h.Connect(ctx, peer.AddrInfo{ID: ids[i], Addrs: servers[i].Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	for {
		if rec, err := d.local.Get(ctx, key); err == nil && rec != nil && bytes.Equal(rec.GetValue(), raw) {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the newcomer never got the record from the holder near it")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := dhts[near].Stats().HandedOff; got != 1 {
		t.Errorf("the near holder handed on %d records, want 1", got)
	}
	// The far holder has met the newcomer too by now (it is in its table)
	// and checked it, or is checking it: wait for its check to end.
	for dhts[far].RoutingTable().Find(h.ID()) == "" || dhts[far].handoff.busy() {
		if ctx.Err() != nil {
			t.Fatal("the far holder never met the newcomer")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := dhts[far].Stats().HandedOff; got != 0 {
		t.Errorf("the far holder handed on %d records, want 0: it is not in the key's neighbourhood", got)
	}
}

// TestNearerThan: the count made without sorting agrees with comparing
// XOR distances, and stops at its limit.
func TestNearerThan(t *testing.T) {
	target := kb.ConvertKey("/presence/key")
	var ids []kb.ID
	for i := range 50 {
		ids = append(ids, kb.ConvertKey(fmt.Sprint("peer ", i)))
	}
	for _, id := range ids {
		want := 0
		for _, o := range ids {
			if bytes.Compare(xor(o, target), xor(id, target)) < 0 {
				want++
			}
		}
		if got := nearerThan(target, id, ids, len(ids)); got != want {
			t.Fatalf("%d peers nearer, want %d", got, want)
		}
		if got := nearerThan(target, id, ids, Neighbourhood); got != min(want, Neighbourhood) {
			t.Fatalf("with a limit of %d: %d peers nearer, want %d", Neighbourhood, got, min(want, Neighbourhood))
		}
	}
}

// TestHandsOn: the rule worked out from counts agrees with its plain
// statement: sort the table by distance to the key, take the
// Neighbourhood nearest; the newcomer must be among them, and fewer than
// handers of the others among them nearer the key than the holder.
func TestHandsOn(t *testing.T) {
	id := func(s string, i int) kb.ID { return kb.ConvertKey(fmt.Sprint(s, i)) }
	handed := 0
	for round := range 400 {
		target := id("key ", round)
		self := id("self ", round)
		var table []kb.ID
		for i := range 5 + round%40 {
			table = append(table, id(fmt.Sprint("peer ", round, " "), i))
		}
		for _, newcomer := range table {
			byDistance := slices.Clone(table)
			slices.SortFunc(byDistance, func(a, b kb.ID) int { return bytes.Compare(xor(a, target), xor(b, target)) })
			nearest := byDistance[:min(Neighbourhood, len(byDistance))]
			others := 0
			for _, p := range nearest {
				if !bytes.Equal(p, newcomer) && closerTo(target, p, self) {
					others++
				}
			}
			want := slices.ContainsFunc(nearest, func(p kb.ID) bool { return bytes.Equal(p, newcomer) }) && others < handers
			if got := handsOn(target, self, newcomer, table); got != want {
				t.Fatalf("round %d: handsOn %v, want %v", round, got, want)
			}
			if want {
				handed++
			}
		}
	}
	if handed == 0 {
		t.Fatal("no case handed a record on: the test checks nothing")
	}
}
