package dht

import (
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// kbucketTag is the tag kad-dht gives the connection manager for a peer in
// its routing table; it pins (protects) those of its two farthest buckets
// — up to 40 connections that are never trimmed.
const kbucketTag = "kbucket"

// pinnedValue is what an unpinned routing-table peer weighs for the
// connection manager: above kad-dht's other buckets (5), so that these
// connections are among the last trimmed, but trimmed they can be.
const pinnedValue = 10

// tableHost hands kad-dht a host whose connection manager learns of each
// peer that enters the routing table (kad-dht tags or pins it there, under
// the table's lock), to hand it the records it should hold (see handoff),
// and unless pin is set turns kad-dht's pins into high tags (see
// Config.PinTable). Measured in the simulator (300 nodes, 20 % servers):
// open connections per node 24 -> 18, goroutines 110 -> 91, wall time +4 %
// (more first hops need a handshake).
type tableHost struct {
	host.Host
	cm connmgr.ConnManager
}

func (h tableHost) ConnManager() connmgr.ConnManager { return h.cm }

type tableConns struct {
	connmgr.ConnManager
	pin   bool
	added func(peer.ID) // must not block
}

func (c tableConns) Protect(p peer.ID, tag string) {
	if tag != kbucketTag {
		c.ConnManager.Protect(p, tag)
		return
	}
	c.added(p)
	if c.pin {
		c.ConnManager.Protect(p, tag)
	} else {
		c.ConnManager.TagPeer(p, tag, pinnedValue)
	}
}

func (c tableConns) TagPeer(p peer.ID, tag string, value int) {
	if tag == kbucketTag {
		c.added(p)
	}
	c.ConnManager.TagPeer(p, tag, value)
}

func (c tableConns) Unprotect(p peer.ID, tag string) bool {
	if tag == kbucketTag && !c.pin {
		return false // never pinned; kad-dht untags it next
	}
	return c.ConnManager.Unprotect(p, tag)
}
