package inbox

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/store"
)

// TestLearnCollects: a lookup of the node's key made for another reason
// (its presence republish) brings a pass at once, which lists at the
// replicas it found, over the connections the lookup just made; unless a
// pass is under way or ended less than MinGap ago. The pass's own lookup
// brings none.
func TestLearnCollects(t *testing.T) {
	h, err := libp2p.New(libp2p.NoListenAddrs)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	st, err := store.Open(filepath.Join(t.TempDir(), "db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var lookups atomic.Int32
	var c *Collector
	closest := func(context.Context, string) ([]peer.ID, error) {
		lookups.Add(1)
		c.Learn(replicaIDs(t, 3)) // as the node's DHT tells it of its own lookups
		return nil, errors.New("no peers")
	}
	const gap = 200 * time.Millisecond
	c = NewCollector(CollectorConfig{Client: NewClient(h, closest, 5), Self: h.ID(), Store: st, Interval: time.Hour, MinGap: gap})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	passes := func() int64 { return c.lastPass.Load() }
	waitUntil := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not happen", what)
			}
		}
	}
	waitUntil("the first pass", func() bool { return passes() != 0 })
	first := passes()
	// The first pass looked up, and was told of its own lookup: no pass
	// more came of it.
	time.Sleep(2 * gap)
	if passes() != first || lookups.Load() != 1 {
		t.Fatalf("after the first pass: %d lookups, another pass %v", lookups.Load(), passes() != first)
	}
	// A republish's lookup, well after the last pass: a pass follows. (Its
	// replicas here do not answer, so it looks up too; that lookup, during
	// the pass, brings none.)
	ids := replicaIDs(t, 3)
	c.Learn(ids)
	waitUntil("a pass after the republish", func() bool { return passes() != first })
	// Another less than MinGap after that pass (it has ended: lastPass is
	// set as it ends): too soon.
	second := passes()
	c.Learn(ids)
	time.Sleep(2 * gap)
	if passes() != second {
		t.Fatal("a lookup less than MinGap after a pass, or a pass's own lookup, brought another pass")
	}
	if n := lookups.Load(); n != 2 {
		t.Fatalf("%d lookups, want 2 (one per pass)", n)
	}
}

func replicaIDs(t *testing.T, n int) []peer.ID {
	t.Helper()
	var ids []peer.ID
	for range n {
		h, err := libp2p.New(libp2p.NoListenAddrs)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, h.ID())
		h.Close()
	}
	return ids
}
