package outbox

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/store"
)

// Backoff is the retry schedule after failed delivery attempts: Base after
// the first failure, doubling up to Max.
type Backoff struct {
	Base, Max time.Duration
}

// Delay is how long to wait after the given number of consecutive failures.
func (b Backoff) Delay(failures int) time.Duration {
	if failures <= 0 {
		return 0
	}
	d := b.Base
	for i := 1; i < failures && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// schedule is the pure core of the outbox: which messages wait for which
// peer, when each peer is due for its next attempt, and what an attempt's
// outcome does to them. It does no I/O and reads no clock.
type schedule struct {
	backoff Backoff
	maxAge  time.Duration
	maxSend int
	peers   map[peer.ID]*queue
}

// queue holds one peer's undelivered messages in the order they were sent.
type queue struct {
	msgs     []*store.Message
	failures int
	due      time.Time
	inFlight int // how many of msgs' head are out in an attempt
}

func newSchedule(b Backoff, maxAge time.Duration, maxSend int) *schedule {
	return &schedule{backoff: b, maxAge: maxAge, maxSend: maxSend, peers: make(map[peer.ID]*queue)}
}

// add queues m. A new message is a reason to try its peer again now, even
// if the peer was backing off: the user is waiting for it.
func (s *schedule) add(m *store.Message, now time.Time) {
	q := s.peers[m.Peer]
	if q == nil {
		q = &queue{}
		s.peers[m.Peer] = q
	}
	q.msgs = append(q.msgs, m)
	q.due = now
}

// wake makes p due now: it was just seen online, so waiting out the
// backoff would only delay delivery. It reports whether p had messages.
func (s *schedule) wake(p peer.ID, now time.Time) bool {
	q := s.peers[p]
	if q == nil {
		return false
	}
	if now.Before(q.due) {
		q.due = now
	}
	return true
}

// attempt is one batch to send to one peer.
type attempt struct {
	peer peer.ID
	msgs []*store.Message
}

// take returns the attempts due at now, marking them in flight, and the
// updates for messages that waited past maxAge and have failed.
func (s *schedule) take(now time.Time) ([]attempt, []store.Update) {
	var out []attempt
	var expired []store.Update
	for p, q := range s.peers {
		if q.inFlight > 0 || now.Before(q.due) {
			continue
		}
		kept := q.msgs[:0]
		for _, m := range q.msgs {
			if s.maxAge > 0 && now.Sub(m.At) > s.maxAge {
				expired = append(expired, store.Update{Peer: p, ID: m.ID, State: store.Failed, Reason: "expired: not delivered within " + s.maxAge.String()})
				continue
			}
			kept = append(kept, m)
		}
		q.msgs = kept
		if len(q.msgs) == 0 {
			delete(s.peers, p)
			continue
		}
		n := min(len(q.msgs), s.maxSend)
		q.inFlight = n
		out = append(out, attempt{peer: p, msgs: q.msgs[:n:n]})
	}
	return out, expired
}

// outcome is what became of one message of an attempt.
type outcome struct {
	delivered bool
	reason    string // rejected for good, when !delivered
}

// done records the outcome of p's attempt: results holds one outcome per
// message when the recipient answered, or is nil when the attempt failed as
// a whole. It returns the state updates to persist.
func (s *schedule) done(p peer.ID, results []outcome, now time.Time) []store.Update {
	q := s.peers[p]
	if q == nil || q.inFlight == 0 {
		return nil
	}
	sent := q.msgs[:q.inFlight]
	q.inFlight = 0
	if results == nil {
		q.failures++
		q.due = now.Add(s.backoff.Delay(q.failures))
		return nil
	}
	updates := make([]store.Update, len(sent))
	for i, m := range sent {
		u := store.Update{Peer: p, ID: m.ID, State: store.Delivered}
		if !results[i].delivered {
			u.State, u.Reason = store.Failed, results[i].reason
		}
		updates[i] = u
	}
	q.msgs = q.msgs[len(sent):]
	q.failures = 0
	q.due = now // the rest, if any, go at once
	if len(q.msgs) == 0 {
		delete(s.peers, p)
	}
	return updates
}

// next is when the earliest idle peer falls due; ok is false when none waits.
func (s *schedule) next() (t time.Time, ok bool) {
	for _, q := range s.peers {
		if q.inFlight > 0 {
			continue
		}
		if !ok || q.due.Before(t) {
			t, ok = q.due, true
		}
	}
	return t, ok
}

// pending counts the messages waiting, in flight or not.
func (s *schedule) pending() int {
	n := 0
	for _, q := range s.peers {
		n += len(q.msgs)
	}
	return n
}
