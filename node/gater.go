package node

import (
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// gater refuses connections from peers the user denied or blocked: they get
// no stream through. (It cannot make the node look offline to them: the
// handshake names the dialer only after the node has answered; see
// protocol §9.) The user may still dial a denied peer (to write to it);
// never a blocked one.
type gater struct {
	refuses atomic.Pointer[func(peer.ID) bool] // inbound: denied or blocked
	blocks  atomic.Pointer[func(peer.ID) bool] // both ways: blocked
}

func (g *gater) check(f *atomic.Pointer[func(peer.ID) bool], p peer.ID) bool {
	if fn := f.Load(); fn != nil {
		return (*fn)(p)
	}
	return false
}

func (g *gater) InterceptPeerDial(p peer.ID) bool { return !g.check(&g.blocks, p) }

func (g *gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }

func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

func (g *gater) InterceptSecured(dir network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	if dir == network.DirInbound {
		return !g.check(&g.refuses, p)
	}
	return !g.check(&g.blocks, p)
}

func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
