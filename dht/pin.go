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

// unpinned hands kad-dht a host whose connection manager turns its pins
// into high tags (see Config.PinTable). Measured in the simulator (300
// nodes, 20 % servers): open connections per node 24 -> 18, goroutines
// 110 -> 91, wall time +4 % (more first hops need a handshake).
type unpinned struct {
	host.Host
	cm connmgr.ConnManager
}

func (h unpinned) ConnManager() connmgr.ConnManager { return h.cm }

type tagsNotPins struct{ connmgr.ConnManager }

func (c tagsNotPins) Protect(p peer.ID, tag string) {
	if tag == kbucketTag {
		c.TagPeer(p, tag, pinnedValue)
		return
	}
	c.ConnManager.Protect(p, tag)
}

func (c tagsNotPins) Unprotect(p peer.ID, tag string) bool {
	if tag == kbucketTag {
		return false // never pinned; kad-dht untags it next
	}
	return c.ConnManager.Unprotect(p, tag)
}
