package presence

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"github.com/parley-p2p/parley/store"
)

// puttingDHT counts the records stored: puts with a lookup, nearPuts to
// the peers the last one found. With refuse set, a put with no lookup is
// taken by nobody (the neighbourhood moved).
type puttingDHT struct {
	puts, nearPuts atomic.Int64
	refuse         atomic.Bool
	// newcomer, when set, is a peer the routing table holds nearer the key
	// than the last lookup found.
	newcomer atomic.Bool
	// refuseAll: no peer takes the record, even after a lookup.
	refuseAll atomic.Bool
}

var twenty = func() []peer.ID {
	ps := make([]peer.ID, 20)
	for i := range ps {
		ps[i] = peer.ID(rune('a' + i))
	}
	return ps
}()

func (d *puttingDHT) Put(context.Context, string, []byte) (int, []peer.ID, error) {
	d.puts.Add(1)
	if d.refuseAll.Load() {
		return 0, twenty, nil
	}
	return len(twenty), twenty, nil
}

func (d *puttingDHT) PutTo(_ context.Context, _ string, _ []byte, peers []peer.ID) int {
	d.nearPuts.Add(1)
	if d.refuse.Load() {
		return 0
	}
	return len(peers)
}

func (d *puttingDHT) GetValue(context.Context, string) ([]byte, error) {
	return nil, routing.ErrNotFound
}

// startPublishing runs a presence service on a mocknet host with d for
// its DHT, inside the calling test's synctest bubble, until the test ends.
func startPublishing(t *testing.T, d DHT) *Service {
	t.Helper()
	return startPublishingAfter(t, d, func(*Service) {})
}

// startPublishingAfter is startPublishing, calling before on the service
// before starting it.
func startPublishingAfter(t *testing.T, d DHT, before func(*Service)) *Service {
	t.Helper()
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	h, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "parley.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Identity: newID(t), Host: h, Store: st, DHT: d,
		SendKey: func(peer.ID, PresenceKey) error { return nil }, OnChange: func(View) {}})
	if err != nil {
		t.Fatal(err)
	}
	before(s)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); st.Close() })
	return s
}

// storesAt is how many records, with a lookup, have been stored by a time
// after the start.
type storesAt struct {
	at   time.Duration
	puts int64
}

// checkStores starts publishing with d and checks the stores at each time.
func checkStores(t *testing.T, d *puttingDHT, want []storesAt) {
	t.Helper()
	startPublishing(t, d)
	t0 := time.Now()
	for _, w := range want {
		time.Sleep(w.at - time.Since(t0))
		synctest.Wait()
		if got := d.puts.Load(); got != w.puts {
			t.Fatalf("%d records stored after %v, want %d", got, w.at, w.puts)
		}
	}
}

// TestRepublishSchedule: the record is stored on start, again early (peers
// nearer its key may have joined since), then at a random point of the
// second half of an interval (nodes that joined together fall out of
// step), then every Republish.
func TestRepublishSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &puttingDHT{}
		d.newcomer.Store(true) // peers nearer the key arrive meanwhile
		checkStores(t, d, []storesAt{
			{time.Second, 1},                     // on start
			{150 * time.Second, 1},               // not yet
			{210 * time.Second, 2},               // early: a fifth of the interval (±10 %)
			{10 * time.Minute, 2},                // then at a random point of the second half of the interval
			{18*time.Minute + 30*time.Second, 3}, // (7.5–15 minutes on)
			{23*time.Minute + 30*time.Second, 3}, // then the interval (±10 %)
			{35 * time.Minute, 4},
		})
	})
}

// TestEarlyRepublishSkipped: after the start, the early republish does not
// walk when every peer the first lookup found took the record and the
// routing table knows no peer nearer the key (a swarm already formed); the
// next republish comes at a random point of the second half of an
// interval.
func TestEarlyRepublishSkipped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		checkStores(t, &puttingDHT{}, []storesAt{
			{time.Second, 1},                     // on start
			{210 * time.Second, 1},               // no early one: the neighbourhood holds it
			{10 * time.Minute, 1},                // 7.5–15 minutes after the early one was due
			{18*time.Minute + 30*time.Second, 2}, //
		})
	})
}

// TestRepublishWhenBackInTouch: Republish looks up at once and brings the
// next republish early, as joining does: it must not put off the early one
// after joining (the record would sit for a whole interval with the few
// peers there were as the node joined, and resolvers would not find it).
// Asked before Start — a node's first connection, as it joins, looks like
// being back in touch — it does nothing: Start looks up anyway.
func TestRepublishWhenBackInTouch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &puttingDHT{}
		s := startPublishingAfter(t, d, func(s *Service) { s.Republish() })
		t0 := time.Now()
		step := func(at time.Duration, want int64) {
			t.Helper()
			time.Sleep(at - time.Since(t0))
			synctest.Wait()
			if got := d.puts.Load(); got != want {
				t.Fatalf("%d records stored with a lookup after %v, want %d", got, at, want)
			}
		}
		step(time.Second, 1) // on start only
		s.Republish()
		step(2*time.Second, 2)
		step(3*time.Minute+30*time.Second, 3) // still the early one, three minutes on (±10 %)
		step(10*time.Minute, 3)
		step(18*time.Minute+30*time.Second, 4) // then in the second half of the interval
		s.Republish()                          // back in touch
		step(18*time.Minute+31*time.Second, 5)
		step(22*time.Minute, 6) // early again
	})
}

// TestChangeGoesToTheLastHolders: a status change is stored at the peers the
// last lookup found, with no lookup of its own; a republish (timed or
// asked for) looks up; when too few of the last peers take a change, it
// looks up at once; and peers found longer than a republish interval ago
// are not trusted, nor when the routing table knows a peer nearer the key.
func TestChangeGoesToTheLastHolders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &puttingDHT{}
		s := startPublishing(t, d)
		check := func(when string, puts, nearPuts int64) {
			t.Helper()
			synctest.Wait()
			if p, n := d.puts.Load(), d.nearPuts.Load(); p != puts || n != nearPuts {
				t.Fatalf("%s: %d stores with a lookup and %d without, want %d and %d", when, p, n, puts, nearPuts)
			}
		}
		check("on start", 1, 0)
		time.Sleep(30 * time.Second)
		if err := s.SetStatus(Away, "lunch"); err != nil {
			t.Fatal(err)
		}
		check("after a change", 1, 1)
		d.newcomer.Store(true) // a peer nearer the key: the early republish walks
		time.Sleep(3 * time.Minute)
		d.newcomer.Store(false)
		check("after the republish", 2, 1)
		d.refuse.Store(true)
		if err := s.SetStatus(Busy, ""); err != nil {
			t.Fatal(err)
		}
		check("after a change the last peers refused", 3, 2)
		d.refuse.Store(false)
		s.Republish()
		check("after Republish", 4, 2)

		// Peers found more than a republish interval ago: look up.
		_, raw, err := s.sign(false)
		if err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		s.nearAt = time.Now().Add(-s.cfg.Republish)
		s.mu.Unlock()
		if !s.store(context.Background(), raw, false) {
			t.Fatal("store failed")
		}
		check("after a change with stale peers", 5, 2)

		// The routing table now holds a peer nearer the key than the last
		// lookup found (it joined since): resolvers would look there, so a
		// change looks up.
		d.newcomer.Store(true)
		if err := s.SetStatus(Online, ""); err != nil {
			t.Fatal(err)
		}
		check("after a change with a newcomer near the key", 6, 2)
		d.newcomer.Store(false)
		if err := s.SetStatus(Away, ""); err != nil {
			t.Fatal(err)
		}
		check("after a change with none", 6, 3)
	})
}

func (d *puttingDHT) Nearest(_ string, n int) []peer.ID {
	near := twenty[:min(n, len(twenty))]
	if d.newcomer.Load() {
		return append([]peer.ID{"newcomer"}, near[:len(near)-1]...)
	}
	return near
}

// TestRetryBacksOff: while no peer takes the record, it is stored again
// after Retry, then after twice as long each time, up to the republish
// interval; once peers take it, the next shortfall is retried after Retry
// again.
func TestRetryBacksOff(t *testing.T) {
	for short, want := range []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 15 * time.Minute} {
		if got := retryAfter(30*time.Second, 15*time.Minute, short); got != want {
			t.Errorf("retry after %d short tries: %v, want %v", short, got, want)
		}
	}
	if got := retryAfter(30*time.Second, 15*time.Minute, 1000); got != 15*time.Minute {
		t.Errorf("retry after 1000 short tries: %v, want the republish interval", got)
	}
	synctest.Test(t, func(t *testing.T) {
		d := &puttingDHT{}
		d.refuseAll.Store(true)
		s := startPublishing(t, d)
		// On start, then retries at 30 s, 1 min 30 s and 3 min 30 s, and
		// the early republish (2.7–3.3 min), which falls short too; the
		// next retry is 4 or 8 minutes after that. A retry every 30 s
		// would have stored it 20 times in ten minutes.
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if got := d.puts.Load(); got < 4 || got > 6 {
			t.Fatalf("%d stores in the first 10 minutes while nobody took the record, want 4 to 6", got)
		}
		// Peers take the record again: the tries in a row start over.
		d.refuseAll.Store(false)
		s.Republish()
		synctest.Wait()
		d.refuseAll.Store(true)
		d.refuse.Store(true) // and the last holders refuse the change
		if err := s.SetStatus(Away, ""); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		before := d.puts.Load()
		time.Sleep(31 * time.Second)
		synctest.Wait()
		if got := d.puts.Load(); got != before+1 {
			t.Fatalf("%d stores in the 31 s after a shortfall that followed a success, want 1", got-before)
		}
	})
}
