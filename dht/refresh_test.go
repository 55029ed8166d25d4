package dht

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestRefreshSchedule: the first refresh comes in the second half of the
// period, the next ones a period (±10 %) apart, none after stop; and nodes
// started together do not refresh together.
func TestRefreshSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const period = 10 * time.Minute
		start := time.Now()
		var mu sync.Mutex
		var at []time.Duration
		r := startRefresher(period, func() {
			mu.Lock()
			at = append(at, time.Since(start))
			mu.Unlock()
		})
		time.Sleep(period/2 + 5*period + period/2)
		synctest.Wait()
		r.stop()
		time.Sleep(3 * period)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(at) < 5 || len(at) > 6 {
			t.Fatalf("%d refreshes in 6 periods: %v", len(at), at)
		}
		if at[0] < period/2 || at[0] > period {
			t.Fatalf("first refresh at %v, want in the second half of %v", at[0], period)
		}
		for i := 1; i < len(at); i++ {
			if gap := at[i] - at[i-1]; gap < period-period/10 || gap > period+period/10 {
				t.Fatalf("refreshes %d and %d are %v apart", i-1, i, gap)
			}
		}
		if last := at[len(at)-1]; last > 6*period {
			t.Fatalf("a refresh at %v, after stop", last)
		}
	})
	// Phases differ: 20 refreshers started at once first fire at different
	// instants (nearly all 20 of them).
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var mu sync.Mutex
		first := map[time.Duration]bool{}
		var rs []*refresher
		for range 20 {
			var once sync.Once
			rs = append(rs, startRefresher(time.Hour, func() {
				once.Do(func() { mu.Lock(); first[time.Since(start)] = true; mu.Unlock() })
			}))
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		for _, r := range rs {
			r.stop()
		}
		if len(first) < 15 {
			t.Fatalf("20 refreshers started together first fired at only %d instants", len(first))
		}
	})
}
