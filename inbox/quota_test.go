package inbox

import (
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/store"
)

var t0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func TestLedgerBounds(t *testing.T) {
	l := Limits{RecipientItems: 3, RecipientBytes: 1000, DepositorItems: 4, DepositorBytes: 10000, DepositorWindow: time.Minute, Budget: 2500}
	g := newLedger(l, map[peer.ID]store.Totals{"old": {Items: 1, Bytes: 500}})
	hold := func(dep, rec peer.ID, size int, now time.Time) error {
		if err := g.admit(dep, rec, size, now); err != nil {
			return err
		}
		g.held(dep, rec, size, now)
		return nil
	}
	for range 3 {
		if err := hold("mallory", "bob", 100, t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := hold("alice", "bob", 100, t0); !errors.Is(err, ErrRecipientFull) {
		t.Fatalf("4th item for bob: %v", err)
	}
	if err := hold("mallory", "carol", 100, t0); err != nil {
		t.Fatal(err)
	}
	if err := hold("mallory", "dave", 100, t0); !errors.Is(err, ErrDepositorRate) {
		t.Fatalf("5th deposit in a window: %v", err)
	}
	// Others are not held back by mallory's rate.
	if err := hold("alice", "dave", 100, t0); err != nil {
		t.Fatalf("alice during mallory's flood: %v", err)
	}
	// A new window lets mallory in again.
	if err := hold("mallory", "dave", 100, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := hold("erin", "frank", 900, t0); err != nil {
		t.Fatal(err)
	}
	if err := hold("erin", "gina", 900, t0); !errors.Is(err, ErrBudget) {
		t.Fatalf("over the budget: %v (total %d)", err, g.total)
	}
	if err := g.admit("erin", "gina", 70<<10, t0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	// Handoffs have no depositor rate, only the holding caps.
	if err := g.admit("", "carol", 100, t0); err != nil {
		t.Fatalf("handoff: %v", err)
	}
	g.released("bob", 3, 300)
	if err := hold("alice", "bob", 100, t0); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

func TestLedgerForgetsOldWindows(t *testing.T) {
	g := newLedger(Limits{maxTrackedSenders: 10}, nil)
	for i := range 100 {
		now := t0.Add(time.Duration(i) * time.Minute) // each window over by the next
		g.held(peer.ID(rune('a'+i%26))+peer.ID(rune(i)), "bob", 1, now)
	}
	if len(g.senders) > 10 {
		t.Fatalf("%d depositor windows kept, bound is 10", len(g.senders))
	}
}

func TestItemID(t *testing.T) {
	if string(ItemID([]byte("a"))) == string(ItemID([]byte("b"))) || len(ItemID(nil)) != IDSize {
		t.Fatal("item ids")
	}
}
