package dht

import (
	"bytes"
	"context"
	"sync/atomic"

	kadpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Stats counts a node's DHT work since it started: the lookups Parley
// asked for (each walks the DHT: a dozen requests or so), and the requests
// this node answered as a server (those include other nodes' lookups and
// kad-dht's own routing-table refreshes, which Parley does not start).
type Stats struct {
	Closest int64 `json:"closest"` // lookups of the peers closest to a key (inbox replicas, presence puts)
	Value   int64 `json:"value"`   // lookups of a record (presence resolves)
	// Widened is the part of Value that found no record among the
	// Neighbourhood nearest peers and went on (see GetValue).
	Widened int64 `json:"widened"`
	Peer    int64 `json:"peer"`   // lookups of a peer's addresses (streams to a peer not known)
	Served  int64 `json:"served"` // requests answered, of any kind
	// ServedRouting is the part of Served that asked for the peers nearest
	// a peer ID rather than a record's key: kad-dht's routing-table upkeep
	// (refresh lookups of random IDs in each bucket, its own ID, the check
	// of a peer before it enters a table) and FindPeer.
	ServedRouting int64 `json:"served_routing"`
	// HandedOff is how many records this server stored at a server that
	// joined their neighbourhood after them (see handoff).
	HandedOff int64 `json:"handed_off"`
}

// Lookups is how many lookups Parley started, of any kind.
func (s Stats) Lookups() int64 { return s.Closest + s.Value + s.Peer }

type counters struct {
	closest, value, widened, peer, served, servedRouting, handedOff atomic.Int64
}

// Stats reports the counts so far.
func (p *DHT) Stats() Stats {
	return Stats{
		Closest: p.count.closest.Load(), Value: p.count.value.Load(), Widened: p.count.widened.Load(),
		Peer: p.count.peer.Load(), Served: p.count.served.Load(), ServedRouting: p.count.servedRouting.Load(),
		HandedOff: p.count.handedOff.Load(),
	}
}

// FindPeer is kad-dht's, counted when it walks the DHT (an address kad-dht
// already knows costs nothing).
func (p *DHT) FindPeer(ctx context.Context, id peer.ID) (peer.AddrInfo, error) {
	if p.IpfsDHT.Host().Network().Connectedness(id) != network.Connected {
		p.count.peer.Add(1)
	}
	return p.IpfsDHT.FindPeer(ctx, id)
}

// onRequest is kad-dht's request hook. Record keys are namespaced
// ("/presence/…"); a peer ID's bytes never start with '/'.
func (c *counters) onRequest(_ context.Context, _ network.Stream, m *kadpb.Message) {
	c.served.Add(1)
	if m.GetType() == kadpb.Message_FIND_NODE && !bytes.HasPrefix(m.GetKey(), []byte("/")) {
		c.servedRouting.Add(1)
	}
}

// Nearest is the n peers this node's routing table holds nearest key, with
// no lookup: a node knows its own neighbourhood well, and so the
// neighbourhoods of keys near it.
func (p *DHT) Nearest(key string, n int) []peer.ID {
	return p.RoutingTable().NearestPeers(kb.ConvertKey(key), n)
}
