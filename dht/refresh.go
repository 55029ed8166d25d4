package dht

import (
	"sync"
	"time"

	"github.com/parley-p2p/parley/internal/jitter"
)

// DefaultRefresh is how often a server refreshes its routing table, as
// kad-dht's own ticker does.
const DefaultRefresh = 10 * time.Minute

// A refresh looks up the node's own ID, and a random key in each bucket
// that is due: that no lookup touched for bucketAge periods. That is every
// other refresh, as with kad-dht's own ticker: there, the bucket a refresh
// looked up is a moment short of a period old at the next tick, so it
// waits for the one after. Spelled out here, that no longer depends on
// the moment a lookup ends.
const bucketAge = 3.0 / 2

// refresher refreshes the routing table on a timer of our own instead of
// kad-dht's. kad-dht's ticks every period from the moment the DHT was
// built, unjittered: servers that joined together (a swarm brought up at
// once, a network back after an outage) refresh together for ever, and
// their lookups come in waves. Ours starts at a random phase and spreads
// every period. It holds no goroutine between refreshes.
type refresher struct {
	mu     sync.Mutex
	timer  *time.Timer
	closed bool
}

func startRefresher(period time.Duration, refresh func()) *refresher {
	r := &refresher{}
	var fire func()
	fire = func() {
		refresh()
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

func (r *refresher) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.timer.Stop()
}
