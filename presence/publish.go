package presence

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/internal/pb"
)

// publishLoop publishes on start, on every change, before the record
// expires, and again soon when too few peers stored it.
func (s *Service) publishLoop(ctx context.Context) {
	defer s.wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-s.changed:
		}
		wait := s.cfg.Republish
		if err := s.publish(ctx, false); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.cfg.Logger.Debug("presence: publish", "err", err)
			wait = s.cfg.Retry
		} else if st := s.lastStats(); st.Accepted < min(s.cfg.MinAccepted, st.Asked) || st.Asked == 0 {
			wait = s.cfg.Retry
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

func (s *Service) lastStats() PublishStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// publish signs a new record, pushes it to the watchers and stores it in
// the DHT, counting the peers that accepted it. offline publishes the user
// as offline (a clean shutdown).
func (s *Service) publish(ctx context.Context, offline bool) error {
	rec, raw, err := s.sign(offline)
	if err != nil {
		return err
	}
	// Watchers first: they are the ones waiting for the change.
	s.notifyWatchers(ctx, raw)
	accepted, asked, err := s.cfg.DHT.Put(ctx, Key(s.self), raw)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.stats = PublishStats{Seq: rec.Seq, At: s.cfg.Now(), Accepted: accepted, Asked: asked}
	s.mu.Unlock()
	return nil
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
	// seq only grows, across restarts too: the clock in milliseconds, or one
	// more than the last when the clock lags.
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
	if err := s.cfg.Store.PutSetting(settingSeq, s.seq); err != nil {
		return nil, nil, err
	}
	s.current = raw
	return rec, raw, nil
}
