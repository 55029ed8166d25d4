package outbox

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/direct"
	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/store"
)

// acker acknowledges every message and tells the test what it carried.
type acker chan []byte

func (a acker) Send(_ context.Context, _ peer.ID, msgs []*pb.Message) ([]direct.Result, error) {
	rs := make([]direct.Result, len(msgs))
	for i, m := range msgs {
		a <- m.Id
		rs[i] = direct.Result{OK: true}
	}
	return rs, nil
}

// TestWakeSendsWhatTheScheduleDropped: a message the store holds for a
// peer but the schedule does not — an attempt has just parked it and its
// Stored state is not yet persisted — goes directly when the peer is seen.
// Before, Wake took only messages the store already called Stored, and a
// wake landing in that gap left the message parked until the next one.
func TestWakeSendsWhatTheScheduleDropped(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "parley.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sent := make(acker, 4)
	states := make(chan store.Update, 4)
	o := New("alice", st, sent, Config{OnState: func(u store.Update) { states <- u }})
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer o.Close()

	// In the store as queued, in no schedule: the state of the gap.
	m := &store.Message{ID: direct.NewID(), Peer: "bob", SentAt: time.Now(), At: time.Now(), Kind: int32(pb.Kind_KIND_RECEIPT), Body: []byte{1}, State: store.Queued}
	if err := st.Queue(m); err != nil {
		t.Fatal(err)
	}
	o.Wake("bob")
	select {
	case id := <-sent:
		if string(id) != string(m.ID) {
			t.Fatalf("sent %x, want %x", id, m.ID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("bob was seen, but the message waiting for him was not sent")
	}
	// The acknowledgement settles it, in the store.
	select {
	case u := <-states:
		if u.State != store.Delivered {
			t.Fatalf("state %s after the acknowledgement", u.State)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the acknowledgement was not recorded")
	}
	if got, err := st.Get("bob", m.ID, true); err != nil || got.State != store.Delivered {
		t.Fatalf("stored state %v (%v)", got, err)
	}
	if n := o.Pending(); n != 0 {
		t.Errorf("%d messages still scheduled", n)
	}
}
