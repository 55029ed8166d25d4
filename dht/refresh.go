package dht

import (
	"sync"
	"time"

	"github.com/parley-p2p/parley/internal/jitter"
)

// DefaultRefresh is how often a server refreshes its routing table, as
// kad-dht's own ticker does.
const DefaultRefresh = 10 * time.Minute

// A refresh walks to the node's own ID, and to a random ID in each bucket
// that is due: that no walk touched for bucketAge periods, an hour at the
// default period. That is Kademlia's own rule (a bucket not looked up in
// the past hour); kad-dht refreshes every bucket every period or two,
// which in a simulated swarm of 300 nodes was a third of the requests
// servers served. The walk to the node's own ID, every period, is what
// keeps the neighbourhood that holds the records fresh.
const bucketAge = 6

// refresh brings the routing table up to date with Parley's walk (see
// Closest) rather than kad-dht's lookups: the walk to the node's own ID
// keeps its neighbourhood (and makes the node known there), and a walk to
// a random ID in each due bucket (every bucket when all is set, as the
// node joins) finds that bucket's live peers. Peers a walk finds gone
// leave the table. Past the first bucket that stays empty, only a few
// more are tried (as kad-dht does): they are emptier still.
func (p *DHT) refresh(all bool) {
	rt := p.RoutingTable()
	_, _ = p.walkTo(p.ctx, string(p.Host().ID()))
	due := time.Duration(float64(p.period) * bucketAge)
	cpls := rt.GetTrackedCplsForRefresh()
	last := len(cpls) - 1
	for cpl := 0; cpl <= last && p.ctx.Err() == nil; cpl++ {
		if !all && time.Since(cpls[cpl]) < due {
			continue
		}
		id, err := rt.GenRandPeerID(uint(cpl))
		if err != nil {
			continue
		}
		_, _ = p.walkTo(p.ctx, string(id))
		if rt.NPeersForCpl(uint(cpl)) == 0 {
			last = min(last, 2*(cpl+1))
		}
	}
}

// refresher refreshes the routing table on a timer of our own instead of
// kad-dht's. kad-dht's ticks every period from the moment the DHT was
// built, unjittered: servers that joined together (a swarm brought up at
// once, a network back after an outage) refresh together for ever, and
// their lookups come in waves. Ours starts at a random phase and spreads
// every period. It holds no goroutine between refreshes.
type refresher struct {
	mu      sync.Mutex
	timer   *time.Timer
	closed  bool
	running sync.WaitGroup
}

func startRefresher(period time.Duration, refresh func()) *refresher {
	r := &refresher{}
	var fire func()
	fire = func() {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return
		}
		r.running.Add(1)
		r.mu.Unlock()
		refresh()
		r.running.Done()
		r.mu.Lock()
		defer r.mu.Unlock()
		if !r.closed {
			r.timer.Reset(jitter.Spread(period))
		}
	}
	r.mu.Lock()
	r.timer = time.AfterFunc(jitter.Phase(period), fire)
	r.mu.Unlock()
	return r
}

// stop ends the schedule and waits for a refresh under way (end its walks
// first: see DHT.Close).
func (r *refresher) stop() {
	r.mu.Lock()
	r.closed = true
	r.timer.Stop()
	r.mu.Unlock()
	r.running.Wait()
}
