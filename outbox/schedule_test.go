package outbox

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/store"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func qm(p peer.ID, n int, at time.Time) *store.Message {
	return &store.Message{ID: []byte(fmt.Sprint(n)), Peer: p, At: at, State: store.Queued}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Base: time.Second, Max: 10 * time.Second}
	want := []time.Duration{0, 1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for n, w := range want {
		if got := b.Delay(n); got != w {
			t.Errorf("Delay(%d) = %v, want %v", n, got, w)
		}
	}
	if got := b.Delay(1000); got != 10*time.Second {
		t.Errorf("Delay(1000) = %v", got)
	}
}

func TestScheduleDeliversInOrder(t *testing.T) {
	s := newSchedule(Backoff{Base: time.Second, Max: time.Minute}, 0, 2, 3)
	for i := range 3 {
		s.add(qm("bob", i, t0), t0)
	}
	as, _ := s.take(t0)
	if len(as) != 1 || len(as[0].msgs) != 2 || string(as[0].msgs[0].ID) != "0" {
		t.Fatalf("first take: %+v", as)
	}
	// Nothing more for bob while his batch is in flight.
	if more, _ := s.take(t0); len(more) != 0 {
		t.Fatalf("took %d attempts while one was in flight", len(more))
	}
	if _, ok := s.next(); ok {
		t.Fatal("next() reports a due time while bob is in flight")
	}
	ups := s.done("bob", []outcome{{delivered: true}, {reason: "rejected by recipient: bad"}}, t0)
	if len(ups) != 2 || ups[0].State != store.Delivered || ups[1].State != store.Failed || ups[1].Reason == "" {
		t.Fatalf("updates %+v", ups)
	}
	as, _ = s.take(t0)
	if len(as) != 1 || len(as[0].msgs) != 1 || string(as[0].msgs[0].ID) != "2" {
		t.Fatalf("second take: %+v", as)
	}
	s.done("bob", []outcome{{delivered: true}}, t0)
	if s.pending() != 0 {
		t.Fatalf("pending %d after all delivered", s.pending())
	}
}

func TestScheduleBacksOffAndNewMessageRetriesNow(t *testing.T) {
	s := newSchedule(Backoff{Base: time.Second, Max: time.Minute}, 0, 10, 3)
	s.add(qm("bob", 1, t0), t0)
	s.take(t0)
	if ups := s.done("bob", nil, t0); ups != nil {
		t.Fatalf("a failed attempt produced updates %v", ups)
	}
	if as, _ := s.take(t0.Add(999 * time.Millisecond)); len(as) != 0 {
		t.Fatal("retried before the backoff ran out")
	}
	t1 := t0.Add(time.Second)
	if as, _ := s.take(t1); len(as) != 1 {
		t.Fatal("no retry once the backoff ran out")
	}
	s.done("bob", nil, t1) // second failure: 2 s
	next, ok := s.next()
	if !ok || next != t1.Add(2*time.Second) {
		t.Fatalf("next = %v %v, want t1+2s", next, ok)
	}
	// A new message to bob means the user is waiting: try now.
	now := t1.Add(500 * time.Millisecond)
	s.add(qm("bob", 2, now), now)
	as, _ := s.take(now)
	if len(as) != 1 || len(as[0].msgs) != 2 {
		t.Fatalf("take after new message: %+v", as)
	}
	s.done("bob", []outcome{{delivered: true}, {delivered: true}}, now)
	if s.pending() != 0 {
		t.Fatal("messages left after success")
	}
}

func TestScheduleExpires(t *testing.T) {
	s := newSchedule(Backoff{Base: time.Second, Max: time.Minute}, time.Hour, 10, 3)
	s.add(qm("bob", 1, t0), t0)
	s.add(qm("bob", 2, t0.Add(30*time.Minute)), t0.Add(30*time.Minute))
	as, expired := s.take(t0.Add(61 * time.Minute))
	if len(expired) != 1 || string(expired[0].ID) != "1" || expired[0].State != store.Failed {
		t.Fatalf("expired %+v", expired)
	}
	if len(as) != 1 || len(as[0].msgs) != 1 || string(as[0].msgs[0].ID) != "2" {
		t.Fatalf("attempts %+v", as)
	}
}

func TestSchedulePeersIndependent(t *testing.T) {
	s := newSchedule(Backoff{Base: time.Second, Max: time.Minute}, 0, 10, 3)
	s.add(qm("bob", 1, t0), t0)
	s.add(qm("carol", 2, t0), t0)
	as, _ := s.take(t0)
	if len(as) != 2 {
		t.Fatalf("%d attempts, want one per peer", len(as))
	}
	s.done("bob", nil, t0)
	s.done("carol", []outcome{{delivered: true}}, t0)
	if s.pending() != 1 {
		t.Fatalf("pending %d", s.pending())
	}
	// A stale or unknown outcome changes nothing.
	if ups := s.done("dave", []outcome{{delivered: true}}, t0); ups != nil {
		t.Fatal("outcome for an unknown peer produced updates")
	}
}

func TestWakeSkipsBackoff(t *testing.T) {
	s := newSchedule(Backoff{Base: time.Minute, Max: time.Hour}, 0, 10, 3)
	s.add(qm("bob", 1, t0), t0)
	s.take(t0)
	s.done("bob", nil, t0)
	now := t0.Add(time.Second)
	if as, _ := s.take(now); len(as) != 0 {
		t.Fatal("retried inside the backoff")
	}
	if !s.wake("bob", now) {
		t.Fatal("wake found no messages for bob")
	}
	if as, _ := s.take(now); len(as) != 1 {
		t.Fatal("no attempt after wake")
	}
	if s.wake("carol", now) {
		t.Fatal("wake reported messages for carol")
	}
}

func TestScheduleParksStoredMessages(t *testing.T) {
	s := newSchedule(Backoff{Base: time.Second, Max: time.Minute}, 0, 10, 3)
	s.add(qm("bob", 1, t0), t0)
	s.add(qm("bob", 2, t0), t0)
	s.take(t0)
	// Direct failed; the first reached 4 replicas, the second only 1.
	ups := s.done("bob", []outcome{{replicas: 4, of: 5}, {replicas: 1, of: 5}}, t0)
	if len(ups) != 2 || ups[0].State != store.Stored || ups[0].Replicas != 4 || ups[1].Replicas != 1 {
		t.Fatalf("updates %+v", ups)
	}
	if s.pending() != 1 {
		t.Fatalf("pending %d: the well-stored message must be parked, the other kept", s.pending())
	}
	// The kept one is tried again after the backoff...
	if as, _ := s.take(t0); len(as) != 0 {
		t.Fatal("retried without backing off")
	}
	as, _ := s.take(t0.Add(time.Second))
	if len(as) != 1 || string(as[0].msgs[0].ID) != "2" {
		t.Fatalf("retry %+v", as)
	}
	// ...and once it reaches the quorum it is parked too.
	s.done("bob", []outcome{{replicas: 3, of: 5}}, t0.Add(time.Second))
	if s.pending() != 0 {
		t.Fatal("a message stored at the quorum is still scheduled")
	}
	// When bob is seen, parked messages come back for a direct try; a
	// failed direct try parks them again, without a new deposit.
	m := qm("bob", 1, t0)
	m.State = store.Stored
	s.add(m, t0)
	as, _ = s.take(t0)
	if len(as) != 1 {
		t.Fatal("woken message not tried")
	}
	if ups := s.done("bob", []outcome{{}}, t0); len(ups) != 0 || s.pending() != 0 {
		t.Fatalf("failed direct try of a stored message: %+v, pending %d", ups, s.pending())
	}
}

func TestScheduleDropSettled(t *testing.T) {
	s := newSchedule(Backoff{Base: time.Second, Max: time.Minute}, 0, 10, 3)
	s.add(qm("bob", 1, t0), t0)
	s.add(qm("bob", 2, t0), t0)
	s.drop("bob", map[string]bool{"1": true})
	if s.pending() != 1 {
		t.Fatalf("pending %d after a receipt settled one", s.pending())
	}
	s.drop("bob", map[string]bool{"2": true})
	if s.pending() != 0 {
		t.Fatal("settled message still scheduled")
	}
}

func TestWakeDuringAttemptKeepsStoredForDirect(t *testing.T) {
	s := newSchedule(Backoff{Base: time.Second, Max: time.Minute}, 0, 10, 3)
	s.add(qm("bob", 1, t0), t0)
	s.take(t0)
	// bob connects while his message is being left with the replicas.
	s.wake("bob", t0)
	s.done("bob", []outcome{{replicas: 5, of: 5}}, t0)
	as, _ := s.take(t0)
	if len(as) != 1 || as[0].msgs[0].State != store.Stored {
		t.Fatalf("a message stored while bob showed up was parked instead of tried directly: %+v", as)
	}
	// That direct try failing parks it for good.
	s.done("bob", []outcome{{}}, t0)
	if s.pending() != 0 {
		t.Fatal("the stored message was not parked after its direct retry failed")
	}
}
