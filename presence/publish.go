package presence

import (
	"context"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/internal/jitter"
	"github.com/parley-p2p/parley/internal/pb"
)

// publishLoop signs a new record on start, on every change and before the
// last one expires, and pushes it to the watchers at once. Storing it in the
// DHT takes lookups and round trips, so that runs beside it (storeLoop):
// a watcher never waits for the DHT to hear of a change.
func (s *Service) publishLoop(ctx context.Context) {
	defer s.wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	// A republish looks the key's neighbourhood up afresh (peers nearer
	// it may have joined); a change goes to the peers the last one found
	// and leaves the schedule as it is. The first record goes out as the
	// node joins, and a record asked for by Republish as the node is back
	// in touch: either time, peers nearer the key may still be arriving (a
	// swarm starting up, a partition healing) and would not hold it. The
	// next republish then comes early, and after it the record sits with
	// the peers resolvers end at.
	// The republish after that early one comes at a random point of the
	// second half of an interval: nodes that joined or came back together
	// would otherwise republish in step, a wave of lookups every interval.
	//
	// The early republish after the node starts walks only if the routing
	// table now knows a peer nearer the key than the peers that took the
	// first record: a node that starts in a swarm already formed (most
	// starts: a restart, a phone back on the network) found the key's
	// neighbourhood at once, and a walk three minutes later would ask the
	// same peers again. Servers that join near the key later get the
	// record handed on by its holders (dht).
	first, early := true, false
	startEarly := false // the early republish due is the one after the start
	for {
		var settling bool
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			if early && startEarly && s.neighbourhoodHeld() {
				early, startEarly = false, false
				timer.Reset(jitter.Phase(s.cfg.Republish))
				continue
			}
			settling, startEarly, first = first, first, false
		case <-s.relook:
			settling, startEarly = true, false
		case <-s.changed:
			s.publish(ctx, false)
			continue
		}
		s.publish(ctx, true)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		var next time.Duration
		switch {
		case settling:
			next, early = jitter.Spread(max(s.cfg.Republish/5, time.Second)), true
		case early:
			next, early = jitter.Phase(s.cfg.Republish), false
		default:
			next = jitter.Spread(s.cfg.Republish)
		}
		timer.Reset(next)
	}
}

// neighbourhoodHeld says whether the record last stored is held by every
// peer its lookup found, and the routing table knows no peer nearer the
// key than they are.
func (s *Service) neighbourhoodHeld() bool {
	s.mu.Lock()
	near, st := s.near, s.stats
	s.mu.Unlock()
	return len(near) > 0 && st.Asked == len(near) && st.Accepted == st.Asked &&
		!nearer(near, s.cfg.DHT.Nearest(Key(s.self), len(near)))
}

// publish signs the current record, pushes it to the watchers and hands
// it to storeLoop.
func (s *Service) publish(ctx context.Context, lookup bool) {
	_, raw, err := s.sign(false)
	if err != nil {
		s.cfg.Logger.Error("presence: cannot sign a record", "err", err)
		return
	}
	s.notifyWatchers(ctx, raw)
	s.keepConns()
	s.toStore(raw, lookup)
}

// storeReq is a record for storeLoop, and whether storing it must look
// the key's neighbourhood up first.
type storeReq struct {
	raw    []byte
	lookup bool
}

// toStore hands the newest record to storeLoop, replacing one not yet taken
// (whose need of a lookup it inherits).
func (s *Service) toStore(raw []byte, lookup bool) {
	for {
		select {
		case s.pending <- storeReq{raw, lookup}:
			return
		default:
		}
		select {
		case old := <-s.pending: // drop the stale one
			lookup = lookup || old.lookup
		default:
		}
	}
}

// storeLoop stores each new record in the DHT, and stores it again after a
// pause while too few peers accepted it.
func (s *Service) storeLoop(ctx context.Context) {
	defer s.wg.Done()
	var req storeReq
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	short := 0 // tries in a row that fell short
	for {
		select {
		case <-ctx.Done():
			return
		case req = <-s.pending:
		case <-retry.C:
			req.lookup = true // the last try fell short: find the peers afresh
		}
		retry.Stop()
		if s.store(ctx, req.raw, req.lookup) || ctx.Err() != nil {
			short = 0
			continue
		}
		retry.Reset(retryAfter(s.cfg.Retry, s.cfg.Republish, short))
		short++
	}
}

// retryAfter is the pause before storing again after short tries in a row
// fell short: Retry, doubling with each, up to the republish interval. A
// try that falls short for want of peers ends when the node is back in
// touch (which republishes at once); one that falls short because peers
// refuse the record (a clock so far off that it looks expired to them)
// would otherwise walk the DHT every Retry for as long as the node runs.
func retryAfter(retry, republish time.Duration, short int) time.Duration {
	d := retry
	for i := 0; i < short && d < republish; i++ {
		d *= 2 // stops at the interval: no overflow however long the run
	}
	return min(d, republish)
}

// store puts raw in the DHT and reports whether enough peers accepted it.
// Unless told to look up, it goes to the peers the last lookup found, if
// that was within a republish interval and the routing table knows no
// peer nearer the key than they are: a status change then costs a round
// trip to each of them, not a walk of the DHT. Should the table know of a
// nearer peer (one that joined since: resolvers would look there), or too
// few of them take it, it looks up at once.
func (s *Service) store(ctx context.Context, raw []byte, lookup bool) bool {
	rec, err := Parse(raw)
	if err != nil {
		return true
	}
	s.mu.Lock()
	near, nearAt := s.near, s.nearAt
	s.mu.Unlock()
	enough := func(accepted, asked int) bool { return asked > 0 && accepted >= min(s.cfg.MinAccepted, asked) }
	var accepted int
	var asked []peer.ID
	if !lookup && len(near) > 0 && s.cfg.Now().Sub(nearAt) < s.cfg.Republish &&
		!nearer(near, s.cfg.DHT.Nearest(Key(s.self), len(near))) {
		accepted, asked = s.cfg.DHT.PutTo(ctx, Key(s.self), raw, near), near
	}
	looked := !enough(accepted, len(asked))
	if looked {
		if accepted, asked, err = s.cfg.DHT.Put(ctx, Key(s.self), raw); err != nil {
			s.cfg.Logger.Debug("presence: store record", "err", err)
			return false
		}
	}
	s.mu.Lock()
	if looked {
		s.near, s.nearAt = asked, s.cfg.Now()
	}
	s.stats = PublishStats{Seq: rec.Seq, At: s.cfg.Now(), Accepted: accepted, Asked: len(asked)}
	s.mu.Unlock()
	if err := s.cfg.Store.PutSetting(settingSeq, rec.Seq); err != nil {
		s.cfg.Logger.Error("presence: cannot save seq", "err", err)
	}
	return enough(accepted, len(asked))
}

// sign builds the next record: a fresh seq, the effective status, sealed
// under the presence key when the policy hides the user from anyone.
func (s *Service) sign(offline bool) (*pb.PresenceRecord, []byte, error) {
	now := s.cfg.Now()
	pol := s.policy.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	if offline {
		st = Offline
	}
	body := &pb.PresenceBody{Status: st.wire()}
	if st != Invisible && st != Offline {
		body.Note = s.note
		for _, a := range s.cfg.Host.Addrs() {
			body.Addrs = append(body.Addrs, a.Bytes())
		}
	}
	if x, err := identity.X25519Public(s.self); err == nil {
		body.X25519 = x[:]
	}
	// seq only grows: the clock in milliseconds, or one more than the last
	// when the clock lags (the last is saved, so this holds across restarts
	// too unless the clock jumps back past it).
	s.seq = max(s.seq+1, uint64(now.UnixMilli()))
	rec := &pb.PresenceRecord{PeerId: []byte(s.self), Seq: s.seq, ExpiresAt: now.Add(s.cfg.Lifetime).UnixMilli()}
	var key *PresenceKey
	if pol.Sealed() {
		if s.key == nil {
			k := NewPresenceKey()
			s.key = &k
		}
		key = s.key
	}
	if err := SetBody(rec, body, key); err != nil {
		return nil, nil, err
	}
	if err := Sign(rec, s.cfg.Identity.PrivKey()); err != nil {
		return nil, nil, err
	}
	raw, err := proto.Marshal(rec)
	if err != nil {
		return nil, nil, err
	}
	s.current = raw
	return rec, raw, nil
}

// publishOffline tells the watchers and the DHT that the user left.
func (s *Service) publishOffline(ctx context.Context) {
	_, raw, err := s.sign(true)
	if err != nil {
		return
	}
	s.notifyWatchers(ctx, raw)
	s.keepConns()
	// With a fresh lookup: this record outlives the node's stay, and a
	// copy left with peers no longer nearest (and so not given the next
	// record when the node is back) would read as offline after it
	// returns, until it expires.
	s.store(ctx, raw, true)
}

// nearer says whether now, the peers the routing table holds nearest a
// key, has one that is not among near, the ones the last lookup found:
// the neighbourhood has changed since.
func nearer(near, now []peer.ID) bool {
	for _, p := range now {
		if !slices.Contains(near, p) {
			return true
		}
	}
	return false
}
