package dht

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	dsq "github.com/ipfs/go-datastore/query"
	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	kb "github.com/libp2p/go-libp2p-kbucket"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/presence"
)

// Handing records on is Kademlia's own rule (Maymounkov and Mazières,
// 2002): a server that holds a record and meets a new server among the
// record's nearest peers stores the record there. A publisher's walk finds
// the neighbourhood of the moment; servers that join afterwards nearer the
// key are unknown to it until its next republish, and a read that reaches
// them finds nothing. In a swarm brought up at once (a thousand nodes take
// three minutes to join), an early publisher's record once sat at only one
// of the sixteen peers nearest its key when a contact looked it up. A
// server that comes back with an empty store gets the records it should
// hold the same way.
//
// Kademlia has every holder among the key's nearest hand the record on,
// so a newcomer gets up to Neighbourhood copies of each record it should
// hold; in a simulated swarm of 1000 forming at once that was 1 132 PUTs
// a node-hour, and the requests a node served more than doubled. Here
// only a holder with fewer than handers other peers it knows nearer the
// key hands it on (so three copies at most): 427 a node-hour in the same
// run, most of them while the swarm forms. A holder far from the key (a
// publisher holds its own record; a walk may end short) leaves it to
// those near. If none of the nearest meets the newcomer, the publisher's
// next republish reaches it.
const handers = 3

// handoffQueue bounds the newcomers waiting to be checked; one that does
// not fit is skipped (the publisher's next republish reaches it).
const handoffQueue = 64

// handoff queues the servers that entered the routing table and checks
// them, all those queued at once together, on a goroutine that lives only
// while the queue is not empty.
type handoff struct {
	dht atomic.Pointer[DHT] // nil until New has built it

	mu      sync.Mutex
	queue   []peer.ID
	running bool
	closed  bool
}

// met is told, by kad-dht under its routing table's lock, that id entered
// the table: it must not block.
func (h *handoff) met(id peer.ID) {
	p := h.dht.Load()
	if p == nil {
		return // still being built: it holds nothing yet
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || len(h.queue) >= handoffQueue {
		return
	}
	if slices.Contains(h.queue, id) {
		return
	}
	h.queue = append(h.queue, id)
	if !h.running {
		h.running = true
		p.bg.Add(1)
		go p.handOff()
	}
}

// close stops new work; the running check ends at its next newcomer.
func (h *handoff) close() {
	h.mu.Lock()
	h.closed = true
	h.queue = nil
	h.mu.Unlock()
}

// busy reports whether newcomers are queued or being checked.
func (h *handoff) busy() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.running
}

// take empties the queue into a batch; it is empty when the queue was.
func (h *handoff) take() []peer.ID {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || len(h.queue) == 0 {
		h.running = false
		return nil
	}
	batch := h.queue
	h.queue = nil
	return batch
}

func (p *DHT) handOff() {
	defer p.bg.Done()
	for {
		batch := p.handoff.take()
		if len(batch) == 0 {
			return
		}
		p.handTo(p.ctx, batch)
	}
}

// handTo stores at each newcomer every record held here whose
// neighbourhood it entered, if this server is in that neighbourhood too.
// It works from one snapshot of the routing table, hashed into the
// keyspace once for the whole batch: no sort and no allocation per record
// (kbucket's NearestPeers per record and newcomer was ~1.5 % of a
// simulated swarm's CPU, and 4.5 % of what it allocated).
func (p *DHT) handTo(ctx context.Context, newcomers []peer.ID) {
	if p.Mode() != kaddht.ModeServer {
		return // a client holds no records
	}
	ids := p.RoutingTable().ListPeers()
	// A newcomer gone from the table since it was queued is skipped: the
	// records' nearest are the table's.
	newcomers = slices.DeleteFunc(newcomers, func(id peer.ID) bool { return !slices.Contains(ids, id) })
	if len(newcomers) == 0 {
		return
	}
	recs := p.held(ctx)
	if len(recs) == 0 {
		return
	}
	self, table, comers := kb.ConvertPeerID(p.Host().ID()), keyspaceIDs(ids), keyspaceIDs(newcomers)
	for _, rec := range recs {
		key := string(rec.GetKey())
		target := kb.ConvertKey(key)
		for i, newcomer := range newcomers {
			if !handsOn(target, self, comers[i], table) {
				continue
			}
			if p.validator.Validate(key, rec.GetValue()) != nil {
				continue // expired since it was stored: not worth handing on
			}
			if p.putTo(ctx, newRecord(key, rec.GetValue()), []peer.ID{newcomer}) == 1 {
				p.count.handedOff.Add(1)
			}
		}
	}
}

// handsOn reports whether this server (self), holding a record for target,
// hands it to newcomer, given its routing table (which holds the
// newcomer): the newcomer is among the table's Neighbourhood peers nearest
// target, and fewer than handers of the table's other peers are nearer
// target than self. (The others among those nearest are the nearest
// others, so those nearer than self among them are all the others nearer
// than self, up to Neighbourhood-1.)
func handsOn(target, self, newcomer kb.ID, table []kb.ID) bool {
	if nearerThan(target, newcomer, table, Neighbourhood) >= Neighbourhood {
		return false
	}
	n := nearerThan(target, self, table, handers+1)
	if closerTo(target, newcomer, self) {
		n-- // the newcomer is not one of the others
	}
	return n < handers
}

func keyspaceIDs(ids []peer.ID) []kb.ID {
	out := make([]kb.ID, len(ids))
	for i, id := range ids {
		out[i] = kb.ConvertPeerID(id)
	}
	return out
}

// nearerThan counts the peers of others nearer target than id, up to
// limit (it stops there).
func nearerThan(target, id kb.ID, others []kb.ID, limit int) int {
	n := 0
	for _, o := range others {
		if closerTo(target, o, id) {
			if n++; n == limit {
				break
			}
		}
	}
	return n
}

// closerTo reports whether a is nearer target than b (XOR distance).
func closerTo(target, a, b kb.ID) bool {
	for i := range target {
		da, db := a[i]^target[i], b[i]^target[i]
		if da != db {
			return da < db
		}
	}
	return false
}

// held is the presence records this server stores for others (and its own).
func (p *DHT) held(ctx context.Context) []*recpb.Record {
	res, err := p.values.Query(ctx, dsq.Query{Prefix: "/" + presence.Namespace})
	if err != nil {
		return nil
	}
	entries, err := res.Rest()
	if err != nil {
		return nil
	}
	recs := make([]*recpb.Record, 0, len(entries))
	for _, e := range entries {
		rec := new(recpb.Record)
		if proto.Unmarshal(e.Value, rec) == nil && len(rec.GetKey()) > 0 {
			recs = append(recs, rec)
		}
	}
	return recs
}
