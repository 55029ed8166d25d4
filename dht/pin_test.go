package dht

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
)

func newHost(t *testing.T, opts ...libp2p.Option) host.Host {
	t.Helper()
	cm, err := connmgr.NewConnManager(4, 8)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(append(opts, libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.ConnectionManager(cm))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestRoutingTablePins: by default a DHT tags its routing-table peers
// instead of pinning them, so the connection manager may trim those
// connections; told to, it pins those of its two farthest buckets, as
// kad-dht does.
func TestRoutingTablePins(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		pins  bool // whether a far peer's connection is pinned
		value int  // the tag a far peer gets when not pinned
	}{
		{"client", Config{Mode: Client}, false, pinnedValue},
		{"server", Config{Mode: Server}, false, pinnedValue},
		{"client told to pin", Config{Mode: Client, PinTable: true}, true, 0},
		{"server told to pin", Config{Mode: Server, PinTable: true}, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Peers of the two farthest buckets: draw servers until one is.
			var srv host.Host
			self := newHost(t)
			for srv == nil {
				h := newHost(t)
				if kb.CommonPrefixLen(kb.ConvertPeerID(self.ID()), kb.ConvertPeerID(h.ID())) < 2 {
					srv = h
				}
			}
			sd, err := New(srv, Config{Mode: Server})
			if err != nil {
				t.Fatal(err)
			}
			defer sd.Close()
			d, err := New(self, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := self.Connect(ctx, peer.AddrInfo{ID: srv.ID(), Addrs: srv.Addrs()}); err != nil {
				t.Fatal(err)
			}
			for d.RoutingTable().Find(srv.ID()) == "" {
				if ctx.Err() != nil {
					t.Fatal("the server never entered the routing table")
				}
				time.Sleep(10 * time.Millisecond)
			}
			cm := self.ConnManager()
			if got := cm.IsProtected(srv.ID(), kbucketTag); got != tc.pins {
				t.Fatalf("pinned %v, want %v", got, tc.pins)
			}
			if info := cm.GetTagInfo(srv.ID()); info == nil || info.Tags[kbucketTag] != tc.value {
				t.Fatalf("tags %+v, want %s=%d", info, kbucketTag, tc.value)
			}
		})
	}
}
