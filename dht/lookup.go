package dht

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"time"

	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	kb "github.com/libp2p/go-libp2p-kbucket"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/routing"
)

// Neighbourhood is how many peers nearest a key Closest finds: the peers a
// presence record is stored at, and the pool a user's inbox replicas (r = 5,
// leaving out the sender and the recipient) are taken from. kad-dht's own
// lookup finds the 20 nearest; a record read with a quorum of 4 needs far
// fewer holders, and every peer more costs each lookup a request and,
// mostly, a new connection.
const Neighbourhood = 8

// The walk's shape. alpha requests in flight at once (kad-dht asks 10):
// Closest serves background work (storing records, finding replicas),
// where a few hundred milliseconds more matter less than the requests
// and handshakes a wide front wastes on peers that turn out not to be
// nearest. A peer that has not answered within askTimeout counts as gone;
// one that has not within stallAfter no longer holds the walk up: the walk
// asks the next peer as if it were gone, and still takes its late answer.
const (
	alpha       = 3
	seeds       = 20 // peers of the routing table a walk starts from
	askTimeout  = 5 * time.Second
	stallAfter  = time.Second
	maxAsked    = 64 // requests one walk makes at most, whatever peers tell it
	maxPerReply = 20 // peers taken from one answer (kad-dht's bucket size)
	maxAddrs    = 8  // addresses taken for one peer
)

var errNoAnswer = errors.New("no peer near the key answered")

// Closest finds the Neighbourhood peers nearest key that answer, nearest
// first, with an iterative walk of the DHT: ask the nearest peers known,
// learn nearer ones from their answers, until the Neighbourhood nearest
// peers not found gone have all answered. It starts from this node's
// routing table, which after a node's first lookups holds the
// neighbourhood of its own key (its republishes then cost about one
// request per neighbour).
//
// Callers that ask for the same key while a walk to it is under way share
// that walk: a node that starts stores its presence record and looks its
// inbox replicas up at once, under the same key, and the second walk would
// ask the same peers the same question. One whose walk was cut short by
// the first caller's context walks again under its own.
func (p *DHT) Closest(ctx context.Context, key string) ([]peer.ID, error) {
	p.walksMu.Lock()
	w, shared := p.walks[key]
	if !shared {
		w = &sharedWalk{done: make(chan struct{})}
		p.walks[key] = w
	}
	p.walksMu.Unlock()
	if shared {
		select {
		case <-w.done:
			cut := errors.Is(w.err, context.Canceled) || errors.Is(w.err, context.DeadlineExceeded)
			if cut && ctx.Err() == nil {
				return p.Closest(ctx, key) // the walk was the other caller's to end
			}
			return slices.Clone(w.closest), w.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	p.count.closest.Add(1)
	w.closest, w.err = p.walkTo(ctx, key)
	p.walksMu.Lock()
	delete(p.walks, key)
	p.walksMu.Unlock()
	close(w.done)
	if w.err == nil && p.onClosest != nil {
		p.onClosest(key, w.closest)
	}
	return slices.Clone(w.closest), w.err
}

// sharedWalk is a walk to one key that callers who ask meanwhile wait for.
type sharedWalk struct {
	done    chan struct{} // closed when closest and err are set
	closest []peer.ID
	err     error
}

// ValueQuorum is how many peers must answer with the record before a
// value lookup ends. The record is held by the Neighbourhood peers nearest
// its key; waiting for every one of them would let one gone without a
// goodbye hold the lookup (for stallAfter at least). The best of four answers is the
// newest with near certainty (the validator picks it), and a holder left
// with an older record gets the newest at the publisher's next republish.
const ValueQuorum = 4

// wideNeighbourhood is how far a value lookup goes when the Neighbourhood
// nearest peers it found all answered without the record. A publisher's
// walk made while the key's neighbourhood was still meeting itself (a
// swarm starting up, peers just back) can end at peers a little farther
// out than a later walk does: each knew no nearer one yet. The record then
// sits just outside the resolver's Neighbourhood, until the next republish
// looks afresh. Going on to twice as many finds it, and costs requests
// only when a lookup would otherwise have failed: kad-dht always walks to
// its 20 nearest.
const wideNeighbourhood = 2 * Neighbourhood

// valueAlpha is a value lookup's requests in flight: one more than the
// quorum, so that the nearest peers known, when they hold the record,
// answer it in one round trip even if one of them does not. A resolve is
// waited on by the user, not background work like Closest.
const valueAlpha = ValueQuorum + 1

// GetValue finds key's record with a walk like Closest's that asks each
// peer for the record (GET_VALUE), and ends once ValueQuorum answers
// carried a valid one (a server's own copy counts as one), or the
// neighbourhood has all answered. It returns the best record found (the
// validator's choice), or routing.ErrNotFound.
func (p *DHT) GetValue(ctx context.Context, key string) ([]byte, error) {
	p.count.value.Add(1)
	var values [][]byte
	if p.Mode() == kaddht.ModeServer {
		if rec, err := p.local.Get(ctx, key); err == nil && rec != nil && p.validator.Validate(key, rec.GetValue()) == nil {
			values = append(values, rec.GetValue())
		}
	}
	getValue := func(ctx context.Context, q peer.ID) ([]*peer.AddrInfo, *recpb.Record, error) {
		rec, ps, err := p.pm.GetValue(ctx, q, key)
		return ps, rec, err
	}
	got := func(rec *recpb.Record) bool {
		if p.validator.Validate(key, rec.GetValue()) == nil {
			values = append(values, rec.GetValue())
		}
		return len(values) >= ValueQuorum
	}
	widen := func() bool {
		if len(values) > 0 {
			return false
		}
		p.count.widened.Add(1)
		return true
	}
	if len(values) < ValueQuorum {
		if _, err := p.walkWith(ctx, key, valueAlpha, getValue, got, widen); err != nil && len(values) == 0 {
			return nil, err
		}
	}
	if len(values) == 0 {
		return nil, routing.ErrNotFound
	}
	i, err := p.validator.Select(key, values)
	if err != nil {
		return nil, err
	}
	return values[i], nil
}

// walkTo is Closest's walk, neither counted nor reported (the routing
// table's refresh uses it too).
func (p *DHT) walkTo(ctx context.Context, key string) ([]peer.ID, error) {
	findNode := func(ctx context.Context, q peer.ID) ([]*peer.AddrInfo, *recpb.Record, error) {
		ps, err := p.pm.GetClosestPeers(ctx, q, peer.ID(key))
		return ps, nil, err
	}
	return p.walkWith(ctx, key, alpha, findNode, nil, nil)
}

// asker sends one request of a walk to q: the peers nearer the key it
// names, and the record it holds, if the request asks for one.
type asker func(ctx context.Context, q peer.ID) ([]*peer.AddrInfo, *recpb.Record, error)

// walkWith runs a walk to key with n requests in flight at most, each made
// by ask. got, when set, is given each record an answer carried; the walk
// stops early when it says so. widen, when set, is asked once when the
// Neighbourhood nearest peers have all answered: if it says so, the walk
// goes on to the wideNeighbourhood nearest.
func (p *DHT) walkWith(ctx context.Context, key string, n int, ask asker, got func(*recpb.Record) (stop bool), widen func() bool) ([]peer.ID, error) {
	target := kb.ConvertKey(key)
	w := newWalk(target, Neighbourhood, p.Host().ID())
	w.hear(p.RoutingTable().NearestPeers(target, seeds))
	if w.empty() {
		return nil, kb.ErrLookupFailure
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		from  peer.ID
		peers []*peer.AddrInfo
		rec   *recpb.Record
		err   error
	}
	// over says whether the walk is done, after widening it once if
	// widen says so.
	over := func() bool {
		if !w.done() {
			return false
		}
		if widen != nil && w.want < wideNeighbourhood && widen() {
			w.want = wideNeighbourhood
			return w.done()
		}
		return true
	}
	answers := make(chan answer)
	stalled := make(chan peer.ID)
	inflight, active := 0, 0 // requests under way, and those not stalled
	finished := false        // done, or stopped by got: the farther peers still asked are not needed
	for {
		if !finished && ctx.Err() == nil {
			for _, q := range w.next(n - active) {
				inflight++
				active++
				go func() {
					actx, done := context.WithTimeout(ctx, askTimeout)
					defer done()
					slow := time.AfterFunc(stallAfter, func() {
						select {
						case stalled <- q:
						case <-ctx.Done():
						}
					})
					ps, rec, err := ask(actx, q)
					slow.Stop()
					answers <- answer{q, ps, rec, err}
				}()
			}
		}
		if inflight == 0 {
			break
		}
		var a answer
		select {
		case q := <-stalled:
			if w.stall(q) {
				active--
			}
			if !finished && over() {
				finished = true
				cancel()
			}
			continue
		case a = <-answers:
		}
		inflight--
		if w.waiting(a.from) {
			active--
		}
		if a.err != nil {
			w.failed(a.from)
			if ctx.Err() == nil {
				// Gone, or no longer a DHT server: kad-dht's own lookups
				// drop such a peer from the table too.
				p.RoutingTable().RemovePeer(a.from)
			}
			continue
		}
		// A peer that answered is a live DHT server: into the table, or
		// marked as just heard from (as kad-dht's lookups do), so that the
		// table's upkeep need not check it again.
		if added, _ := p.RoutingTable().TryAddPeer(a.from, true, false); !added {
			p.RoutingTable().UpdateLastSuccessfulOutboundQueryAt(a.from, time.Now())
		}
		w.answered(a.from, p.learn(a.peers))
		stop := a.rec != nil && got != nil && got(a.rec)
		if !finished && (stop || over()) {
			finished = true
			cancel()
		}
	}
	if !finished {
		if err := parent.Err(); err != nil {
			return nil, err
		}
	}
	closest := w.result()
	if len(closest) == 0 {
		return nil, errNoAnswer
	}
	// A walk near target refreshes that bucket as well as kad-dht's
	// refresh would (see refresher).
	p.RoutingTable().ResetCplRefreshedAtForID(target, time.Now())
	return closest, nil
}

// learn keeps the addresses an answer gave for peers this node is not
// connected to (it has better ones for those it is), for a short while,
// as kad-dht does, and returns the peers in it, bounded.
func (p *DHT) learn(infos []*peer.AddrInfo) []peer.ID {
	if len(infos) > maxPerReply {
		infos = infos[:maxPerReply]
	}
	h := p.Host()
	ids := make([]peer.ID, 0, len(infos))
	for _, ai := range infos {
		if ai == nil || ai.ID == "" || ai.ID == h.ID() {
			continue
		}
		ids = append(ids, ai.ID)
		if h.Network().Connectedness(ai.ID) != network.Connected && len(ai.Addrs) > 0 {
			h.Peerstore().AddAddrs(ai.ID, ai.Addrs[:min(len(ai.Addrs), maxAddrs)], peerstore.TempAddrTTL)
		}
	}
	return ids
}

// A walk is one lookup's state, with no I/O: the peers heard of, nearest
// the target first, and what became of each.
type walk struct {
	target kb.ID
	want   int
	self   peer.ID
	peers  []walkPeer // nearest the target first
	asked  int
}

type walkPeer struct {
	id    peer.ID
	dist  []byte // XOR distance to the target
	state walkState
}

type walkState uint8

const (
	heard walkState = iota
	waiting
	stalled // asked, no answer yet, and too slow to wait for
	answered
	gone
)

func newWalk(target kb.ID, want int, self peer.ID) *walk {
	return &walk{target: target, want: want, self: self}
}

func (w *walk) empty() bool { return len(w.peers) == 0 }

// hear adds peers not yet known, in their place by distance.
func (w *walk) hear(ids []peer.ID) {
	for _, id := range ids {
		if id == w.self || w.find(id) >= 0 {
			continue
		}
		d := xor(w.target, kb.ConvertPeerID(id))
		i, _ := slices.BinarySearchFunc(w.peers, d, func(p walkPeer, d []byte) int { return bytes.Compare(p.dist, d) })
		w.peers = slices.Insert(w.peers, i, walkPeer{id: id, dist: d})
	}
}

func (w *walk) find(id peer.ID) int {
	return slices.IndexFunc(w.peers, func(p walkPeer) bool { return p.id == id })
}

func (w *walk) set(id peer.ID, s walkState) {
	if i := w.find(id); i >= 0 {
		w.peers[i].state = s
	}
}

// next marks and returns up to n peers to ask now: those only heard of
// among the want nearest peers neither gone nor stalled. A peer farther
// out is never asked: it could only name peers the nearer ones know
// better.
func (w *walk) next(n int) []peer.ID {
	var out []peer.ID
	for i, seen := 0, 0; i < len(w.peers) && seen < w.want && len(out) < n && w.asked < maxAsked; i++ {
		p := &w.peers[i]
		if p.state == gone || p.state == stalled {
			continue
		}
		seen++
		if p.state == heard {
			p.state = waiting
			w.asked++
			out = append(out, p.id)
		}
	}
	return out
}

// waiting says whether id was asked and neither answered nor stalled.
func (w *walk) waiting(id peer.ID) bool {
	i := w.find(id)
	return i >= 0 && w.peers[i].state == waiting
}

// stall marks a peer asked a while ago as too slow to wait for: it no
// longer counts among the want nearest (a farther peer is asked in its
// place), but its answer is taken if it comes. It reports whether id was
// waiting.
func (w *walk) stall(id peer.ID) bool {
	if !w.waiting(id) {
		return false
	}
	w.set(id, stalled)
	return true
}

func (w *walk) answered(from peer.ID, nearer []peer.ID) {
	w.set(from, answered)
	w.hear(nearer)
}

func (w *walk) failed(from peer.ID) { w.set(from, gone) }

// done says whether the want nearest peers neither gone nor stalled have
// all answered.
// (With fewer peers than that in the swarm, it is when all have.)
func (w *walk) done() bool {
	seen := 0
	for _, p := range w.peers {
		if p.state == gone || p.state == stalled {
			continue
		}
		if p.state != answered {
			return false
		}
		if seen++; seen == w.want {
			break
		}
	}
	return true
}

// result is the nearest peers that answered, up to want.
func (w *walk) result() []peer.ID {
	var out []peer.ID
	for _, p := range w.peers {
		if p.state == answered && len(out) < w.want {
			out = append(out, p.id)
		}
	}
	return out
}

func xor(a, b kb.ID) []byte {
	d := make([]byte, len(a))
	for i := range a {
		d[i] = a[i] ^ b[i]
	}
	return d
}
