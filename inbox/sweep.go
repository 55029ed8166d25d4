package inbox

import (
	"context"
	"slices"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/internal/jitter"
	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/store"
)

// sweepLoop expires old items and hands items to the peers now closest to
// their recipient's key, so a message survives churn among its replicas.
func (r *Replica) sweepLoop(ctx context.Context) {
	defer r.wg.Done()
	last := newSweepState()
	t := time.NewTimer(jitter.Spread(r.cfg.Sweep))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(jitter.Spread(r.cfg.Sweep))
		r.expire()
		r.rebalance(ctx, last)
	}
}

// Sweep runs one expiry and handoff pass now (tests and tools).
func (r *Replica) Sweep(ctx context.Context) {
	r.expire()
	r.rebalance(ctx, newSweepState())
}

// sweepState is what rebalancing remembers between sweeps, per recipient:
// the other replicas found last time and when they were looked up.
type sweepState struct {
	last   map[peer.ID]map[peer.ID]bool
	looked map[peer.ID]time.Time
}

func newSweepState() *sweepState {
	return &sweepState{last: map[peer.ID]map[peer.ID]bool{}, looked: map[peer.ID]time.Time{}}
}

// relookEvery bounds how long a replica trusts its own routing table's
// view of a recipient's neighbourhood before it looks it up again.
const relookEvery = 30 * time.Minute

// neighbourhoodChanged says whether the routing table's view of the peers
// nearest a recipient's key (nearest) differs from the replica set found
// by the last lookup (last, without self): whether a newcomer now ranks
// among the r closest, or this replica no longer does. A replica is near
// the keys it holds, and Kademlia keeps a node's own neighbourhood well
// known, so its table sees a newcomer there as soon as a lookup would.
func neighbourhoodChanged(self, recipient peer.ID, key string, last map[peer.ID]bool, nearest []peer.ID, r int) bool {
	candidates := []peer.ID{self}
	for p := range last {
		candidates = append(candidates, p)
	}
	for _, p := range nearest {
		if p != self && p != recipient && !last[p] {
			candidates = append(candidates, p)
		}
	}
	candidates = kb.SortClosestPeers(candidates, kb.ConvertKey(key))
	top := candidates[:min(len(candidates), r)]
	if !slices.Contains(top, self) {
		return true
	}
	for _, p := range top {
		if p != self && !last[p] {
			return true
		}
	}
	return false
}

func (r *Replica) expire() {
	gone, err := r.cfg.Store.Expired(r.cfg.Now())
	if err != nil {
		r.cfg.Logger.Error("inbox: expiry sweep", "err", err)
		return
	}
	for recipient, ids := range gone {
		for len(ids) > 0 {
			n := min(len(ids), MaxBatch)
			if err := r.release(recipient, ids[:n]); err != nil {
				r.cfg.Logger.Error("inbox: expire", "err", err)
			}
			ids = ids[n:]
		}
	}
}

// rebalance checks, per recipient held, which peers are now its closest.
// Newcomers among them get every item; if this replica is no longer among
// them, it hands everything over and drops its copies once enough of them
// confirmed.
//
// A lookup per recipient per sweep would make a busy replica's sweeps most
// of its traffic; so between lookups (at most relookEvery apart) a sweep
// asks the routing table first and looks up only when the neighbourhood
// changed.
func (r *Replica) rebalance(ctx context.Context, st *sweepState) {
	self := r.cfg.Host.ID()
	last := st.last
	now := r.cfg.Now()
	held := r.Totals()
	for recipient := range last {
		if _, ok := held[recipient]; !ok {
			delete(last, recipient) // nothing held for it any more
			delete(st.looked, recipient)
		}
	}
	for recipient := range held {
		key := Key(recipient)
		if prev, ok := last[recipient]; ok && r.cfg.Nearest != nil && now.Sub(st.looked[recipient]) < relookEvery &&
			!neighbourhoodChanged(self, recipient, key, prev, r.cfg.Nearest(key, r.cfg.R+1), r.cfg.R) {
			continue
		}
		closest, err := r.cfg.Closest(ctx, key)
		if err != nil {
			continue
		}
		st.looked[recipient] = now
		// The lookup never answers with ourselves: put us in and see
		// whether we rank among the R closest.
		candidates := []peer.ID{self}
		for _, p := range closest {
			if p != recipient && p != self {
				candidates = append(candidates, p)
			}
		}
		candidates = kb.SortClosestPeers(candidates, kb.ConvertKey(Key(recipient)))
		targets := candidates[:min(len(candidates), r.cfg.R)]
		inSet := slices.Contains(targets, self)
		now := map[peer.ID]bool{}
		var newcomers []peer.ID
		for _, p := range targets {
			if p == self {
				continue
			}
			now[p] = true
			if !last[recipient][p] {
				newcomers = append(newcomers, p)
			}
		}
		last[recipient] = now
		items, err := r.cfg.Store.Held(recipient, nil, true)
		if err != nil || len(newcomers) == 0 && inSet {
			continue
		}
		if inSet {
			r.handOver(ctx, recipient, items, newcomers)
			continue
		}
		var all []peer.ID
		for p := range now {
			all = append(all, p)
		}
		confirmed := r.handOver(ctx, recipient, items, all)
		var done [][]byte
		for _, it := range items {
			if confirmed[string(it.ID)] >= min(3, len(all)) && len(all) > 0 {
				done = append(done, it.ID)
			}
		}
		for len(done) > 0 {
			n := min(len(done), MaxBatch)
			if err := r.release(recipient, done[:n]); err != nil {
				r.cfg.Logger.Error("inbox: drop handed-off items", "err", err)
			}
			done = done[n:]
		}
	}
}

// handOver sends items to peers and counts, per item id, who accepted.
func (r *Replica) handOver(ctx context.Context, recipient peer.ID, items []store.HeldItem, to []peer.ID) map[string]int {
	confirmed := map[string]int{}
	c := &Client{host: r.cfg.Host, r: r.cfg.R}
	for _, p := range to {
		for _, it := range items {
			req := &pb.InboxRequest{Op: &pb.InboxRequest_Handoff{Handoff: &pb.Handoff{
				Recipient: []byte(recipient), Item: it.Data, ExpiresAt: it.Expires.UnixMilli(),
			}}}
			if resp, err := c.call(ctx, p, req); err == nil && resp.Status == pb.InboxResponse_OK {
				confirmed[string(it.ID)]++
			}
		}
	}
	return confirmed
}
