package dht

import (
	"context"
	"testing"

	kadpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestServedRouting: of the requests served, those for the peers nearest a
// peer ID (kad-dht's routing-table upkeep) are told apart from those for a
// record's key.
func TestServedRouting(t *testing.T) {
	id, err := peer.Decode("12D3KooWGRUVh8Xwvpe7FV3fMcWLUyHrz7ozrPzgeaZyLktgA3jo")
	if err != nil {
		t.Fatal(err)
	}
	var c counters
	for _, m := range []*kadpb.Message{
		{Type: kadpb.Message_FIND_NODE, Key: []byte(id)}, // routing
		{Type: kadpb.Message_FIND_NODE, Key: []byte("/presence/" + id)},
		{Type: kadpb.Message_GET_VALUE, Key: []byte("/presence/" + id)},
		{Type: kadpb.Message_PUT_VALUE, Key: []byte("/presence/" + id)},
		{Type: kadpb.Message_FIND_NODE, Key: []byte(id)}, // routing
	} {
		c.onRequest(context.Background(), nil, m)
	}
	if s, r := c.served.Load(), c.servedRouting.Load(); s != 5 || r != 2 {
		t.Fatalf("served %d, for routing %d; want 5 and 2", s, r)
	}
}
