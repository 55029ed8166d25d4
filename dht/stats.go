package dht

import (
	"bytes"
	"context"
	"sync/atomic"

	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	kadpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
)

// Stats counts a node's DHT work since it started: the lookups Parley
// asked for (each walks the DHT: a dozen requests or so), and the requests
// this node answered as a server (those include other nodes' lookups and
// kad-dht's own routing-table refreshes, which Parley does not start).
type Stats struct {
	Closest int64 `json:"closest"` // lookups of the peers closest to a key (inbox replicas, presence puts)
	Value   int64 `json:"value"`   // lookups of a record (presence resolves)
	Peer    int64 `json:"peer"`    // lookups of a peer's addresses (streams to a peer not known)
	Served  int64 `json:"served"`  // requests answered, of any kind
	// ServedRouting is the part of Served that asked for the peers nearest
	// a peer ID rather than a record's key: kad-dht's routing-table upkeep
	// (refresh lookups of random IDs in each bucket, its own ID, the check
	// of a peer before it enters a table) and FindPeer.
	ServedRouting int64 `json:"served_routing"`
}

// Lookups is how many lookups Parley started, of any kind.
func (s Stats) Lookups() int64 { return s.Closest + s.Value + s.Peer }

type counters struct {
	closest, value, peer, served, servedRouting atomic.Int64
}

// Stats reports the counts so far.
func (p *DHT) Stats() Stats {
	return Stats{
		Closest: p.count.closest.Load(), Value: p.count.value.Load(),
		Peer: p.count.peer.Load(), Served: p.count.served.Load(), ServedRouting: p.count.servedRouting.Load(),
	}
}

// ValueQuorum is how many answers carrying the record a value lookup waits
// for, unless told otherwise. A record is stored at the Neighbourhood
// peers nearest its key; kad-dht's default (no quorum) walks on until every
// one of the 20 nearest has answered, so one of them gone without a goodbye holds the lookup
// until its dial times out. The best of four answers is the newest with
// near certainty (the validator picks it, and kad-dht corrects the peers
// that answered with an older one).
const ValueQuorum = 4

// GetValue is kad-dht's, counted, with ValueQuorum by default.
func (p *DHT) GetValue(ctx context.Context, key string, opts ...routing.Option) ([]byte, error) {
	p.count.value.Add(1)
	if len(opts) == 0 {
		opts = []routing.Option{kaddht.Quorum(ValueQuorum)}
	}
	// Once the quorum is met kad-dht stops reading answers, and a query
	// goroutine holding one more waits for the context to end: end it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	return p.IpfsDHT.GetValue(ctx, key, opts...)
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
