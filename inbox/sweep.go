package inbox

import (
	"context"
	"slices"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/store"

	"github.com/parley-p2p/parley/internal/jitter"
)

// sweepLoop expires old items and hands items to the peers now closest to
// their recipient's key, so a message survives churn among its replicas.
func (r *Replica) sweepLoop(ctx context.Context) {
	defer r.wg.Done()
	last := map[peer.ID]map[peer.ID]bool{} // per recipient, the replicas seen last time
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
	r.rebalance(ctx, map[peer.ID]map[peer.ID]bool{})
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
func (r *Replica) rebalance(ctx context.Context, last map[peer.ID]map[peer.ID]bool) {
	self := r.cfg.Host.ID()
	for recipient := range r.Totals() {
		closest, err := r.cfg.Closest(ctx, Key(recipient))
		if err != nil {
			continue
		}
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
