package inbox

import (
	"crypto/rand"
	"testing"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func somePeers(t *testing.T, n int) []peer.ID {
	t.Helper()
	out := make([]peer.ID, n)
	for i := range out {
		_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if out[i], err = peer.IDFromPublicKey(pub); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// The routing table's view decides whether a sweep needs a lookup: the same
// neighbourhood needs none; a newcomer among the r closest, or this replica
// falling out of them, does.
func TestNeighbourhoodChanged(t *testing.T) {
	const r = 3
	recipient := somePeers(t, 1)[0]
	key := Key(recipient)
	ps := kb.SortClosestPeers(somePeers(t, 8), kb.ConvertKey(key)) // ps[0] nearest the key
	set := func(ids ...peer.ID) map[peer.ID]bool {
		m := map[peer.ID]bool{}
		for _, p := range ids {
			m[p] = true
		}
		return m
	}

	// self = ps[1]; last time the set was ps[0..2]; the table sees the same.
	self := ps[1]
	if neighbourhoodChanged(self, recipient, key, set(ps[0], ps[2]), []peer.ID{ps[0], ps[2], ps[5]}, r) {
		t.Error("unchanged neighbourhood reported as changed")
	}
	// The table also holds nobody new nearer than the set: still no lookup.
	if neighbourhoodChanged(self, recipient, key, set(ps[0], ps[2]), []peer.ID{ps[6], ps[7]}, r) {
		t.Error("farther peers reported as a change")
	}
	// A newcomer nearer than ps[2] (self = ps[3] this time, set ps[0], ps[4]).
	self = ps[3]
	if !neighbourhoodChanged(self, recipient, key, set(ps[0], ps[4]), []peer.ID{ps[1]}, r) {
		t.Error("a newcomer among the closest went unnoticed")
	}
	// Two newcomers push self out of the r closest.
	if !neighbourhoodChanged(ps[5], recipient, key, set(ps[0], ps[6]), []peer.ID{ps[1], ps[2]}, r) {
		t.Error("falling out of the replica set went unnoticed")
	}
	// The recipient itself is never a replica.
	rcp := ps[2]
	k2 := Key(rcp)
	last := set(ps[3], ps[4])
	if neighbourhoodChanged(ps[1], rcp, k2, last, []peer.ID{rcp}, 8) {
		t.Error("the recipient was counted as a newcomer replica")
	}
}
