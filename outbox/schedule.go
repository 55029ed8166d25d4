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
	quorum  int // replicas that must hold a message before it is parked
	peers   map[peer.ID]*queue
}

// queue holds one peer's undelivered messages in the order they were sent.
type queue struct {
	msgs     []*store.Message
	failures int
	due      time.Time
	inFlight int  // how many of msgs' head are out in an attempt
	rewake   bool // the peer was seen during the attempt: try it directly once more
}

func newSchedule(b Backoff, maxAge time.Duration, maxSend, quorum int) *schedule {
	return &schedule{backoff: b, maxAge: maxAge, maxSend: maxSend, quorum: quorum, peers: make(map[peer.ID]*queue)}
}

// add queues m. A new message is a reason to try its peer again now, even
// if the peer was backing off: the user is waiting for it. A message
// already held by replicas (state Stored) is only tried directly.
func (s *schedule) add(m *store.Message, now time.Time) {
	q := s.peers[m.Peer]
	if q == nil {
		q = &queue{}
		s.peers[m.Peer] = q
	}
	for _, have := range q.msgs {
		if string(have.ID) == string(m.ID) {
			q.due = now
			return
		}
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
	if q.inFlight > 0 {
		q.rewake = true // its outcome must not park what could go directly now
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
	delivered    bool   // acknowledged by the recipient
	reason       string // rejected for good
	replicas, of int    // left with replicas: how many hold it, of how many asked
}

// done records the outcome of p's attempt: one outcome per message sent
// (a zero outcome: nothing came of it). It returns the state updates to
// persist.
//
// A delivered or rejected message leaves the schedule. One held by at least
// quorum replicas is parked: it leaves the schedule until the recipient is
// seen again (wake), when it is tried directly once more. The others stay,
// and the peer backs off, unless something went through.
func (s *schedule) done(p peer.ID, results []outcome, now time.Time) []store.Update {
	q := s.peers[p]
	if q == nil || q.inFlight == 0 {
		return nil
	}
	sent := q.msgs[:q.inFlight]
	q.inFlight = 0
	rewake := q.rewake
	q.rewake = false
	var updates []store.Update
	var keep []*store.Message
	progress := false
	for i, m := range sent {
		var r outcome
		if i < len(results) {
			r = results[i]
		}
		switch {
		case r.delivered:
			updates = append(updates, store.Update{Peer: p, ID: m.ID, State: store.Delivered})
			progress = true
		case r.reason != "":
			updates = append(updates, store.Update{Peer: p, ID: m.ID, State: store.Failed, Reason: r.reason})
			progress = true
		case r.replicas > 0:
			updates = append(updates, store.Update{Peer: p, ID: m.ID, State: store.Stored, Replicas: r.replicas, Of: r.of})
			m.State = store.Stored
			if r.replicas < s.quorum || rewake {
				keep = append(keep, m) // try for more replicas, or directly: the peer was just seen
			} else {
				progress = true
			}
		case m.State == store.Stored && !rewake:
			// Already held by replicas; the direct try failed: park it again.
		default:
			keep = append(keep, m)
		}
	}
	q.msgs = append(keep, q.msgs[len(sent):]...)
	if len(q.msgs) == 0 {
		delete(s.peers, p)
		return updates
	}
	if progress && len(keep) == 0 || rewake {
		q.failures = 0
		q.due = now // the rest go at once
	} else {
		q.failures++
		q.due = now.Add(s.backoff.Delay(q.failures))
	}
	return updates
}

// drop takes messages out of the schedule (a receipt settled them).
func (s *schedule) drop(p peer.ID, ids map[string]bool) {
	q := s.peers[p]
	if q == nil {
		return
	}
	// A new slice: an attempt in flight still reads the old one.
	kept := make([]*store.Message, 0, len(q.msgs))
	for i, m := range q.msgs {
		if ids[string(m.ID)] && i >= q.inFlight {
			continue
		}
		kept = append(kept, m)
	}
	q.msgs = kept
	if len(q.msgs) == 0 {
		delete(s.peers, p)
	}
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
