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

// puttingDHT counts the records stored.
type puttingDHT struct{ puts atomic.Int64 }

func (d *puttingDHT) Put(context.Context, string, []byte) (int, int, error) {
	d.puts.Add(1)
	return 20, 20, nil
}

func (d *puttingDHT) GetValue(context.Context, string, ...routing.Option) ([]byte, error) {
	return nil, routing.ErrNotFound
}

// TestRepublishSchedule: the record is stored on start, again early (peers
// nearer its key may have joined since), then every Republish.
func TestRepublishSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := mocknet.New()
		defer mn.Close()
		h, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		st, err := store.Open(filepath.Join(t.TempDir(), "parley.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		d := &puttingDHT{}
		s, err := New(Config{Identity: newID(t), Host: h, Store: st, DHT: d,
			SendKey: func(peer.ID, PresenceKey) error { return nil }, OnChange: func(View) {}})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		t0 := time.Now()
		for _, want := range []struct {
			at   time.Duration
			puts int64
		}{
			{time.Second, 1},      // on start
			{90 * time.Second, 1}, // not yet
			{3 * time.Minute, 2},  // early: a fifth of the interval (±10 %)
			{11 * time.Minute, 2}, // then the interval (±10 %)
			{14 * time.Minute, 3},
		} {
			time.Sleep(want.at - time.Since(t0))
			synctest.Wait()
			if got := d.puts.Load(); got != want.puts {
				t.Fatalf("%d records stored after %v, want %d", got, want.at, want.puts)
			}
		}
	})
}
