package presence

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/store"
)

func loopbackHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func serviceOn(t *testing.T, h host.Host) *Service {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "parley.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := New(Config{Identity: newID(t), Host: h, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSpareConnectionClosed: two peers that dialled each other at once hold
// two connections; both ends close the same spare one and keep the other.
func TestSpareConnectionClosed(t *testing.T) {
	old := spareAge
	spareAge = 0
	t.Cleanup(func() { spareAge = old })
	a, b := loopbackHost(t), loopbackHost(t)
	sa, sb := serviceOn(t, a), serviceOn(t, b)
	// Setting the scene can take many tries on a loaded machine: two dials
	// must cross before either end sees the other's connection.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Dial both ways at once until two connections come up.
	for len(a.Network().ConnsToPeer(b.ID())) < 2 {
		if ctx.Err() != nil {
			t.Fatal("never got two connections")
		}
		for _, c := range a.Network().ConnsToPeer(b.ID()) {
			c.Close()
		}
		var wg sync.WaitGroup
		wg.Go(func() { a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}) })
		wg.Go(func() { b.Connect(ctx, peer.AddrInfo{ID: a.ID(), Addrs: a.Addrs()}) })
		wg.Wait()
		time.Sleep(20 * time.Millisecond) // the listener's side registers its connection
	}
	sa.pruneDuplicates(b.ID())
	sb.pruneDuplicates(a.ID())
	for len(a.Network().ConnsToPeer(b.ID())) != 1 || len(b.Network().ConnsToPeer(a.ID())) != 1 {
		if ctx.Err() != nil {
			t.Fatalf("connections a->b %d, b->a %d; want one each", len(a.Network().ConnsToPeer(b.ID())), len(b.Network().ConnsToPeer(a.ID())))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Both ends kept the same connection.
	ca, cb := a.Network().ConnsToPeer(b.ID())[0], b.Network().ConnsToPeer(a.ID())[0]
	if !ca.LocalMultiaddr().Equal(cb.RemoteMultiaddr()) || !ca.RemoteMultiaddr().Equal(cb.LocalMultiaddr()) {
		t.Fatalf("the ends kept different connections: %s-%s and %s-%s", ca.LocalMultiaddr(), ca.RemoteMultiaddr(), cb.RemoteMultiaddr(), cb.LocalMultiaddr())
	}
}
