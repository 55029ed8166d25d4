package dht

import (
	"sync"
	"time"

	"github.com/parley-p2p/parley/internal/jitter"
)

// DefaultRefresh is how often a server refreshes its routing table: kad-dht's
// own period.
const DefaultRefresh = 10 * time.Minute

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
