package presence

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/routing"
	ma "github.com/multiformats/go-multiaddr"
)

// View is a contact's presence as this node sees it. A contact whose record
// is missing, expired, or sealed with a key this node lacks is Offline:
// the three look the same on purpose.
type View struct {
	Peer    peer.ID
	Status  Status
	Note    string
	Addrs   []ma.Multiaddr
	Seq     uint64
	Updated time.Time // when this node got the record
	Expires time.Time
	Source  string // "dht", "subscribe", "notify" (pushed), or "" when no record was found
}

// cached is a contact's last verified record.
type cached struct {
	raw     []byte
	seq     uint64
	view    View
	fetched time.Time
	source  string
}

// Resolve returns p's presence: from the cache while p pushes its changes
// to us (a live subscription) and the record has not expired, otherwise
// fresh from the DHT.
func (s *Service) Resolve(ctx context.Context, p peer.ID) (View, error) {
	now := s.cfg.Now()
	s.mu.Lock()
	c := s.cache[p]
	until, watched := s.subs[p]
	s.mu.Unlock()
	if c != nil && watched && now.Before(until) && now.Before(c.view.Expires) {
		return c.view, nil
	}
	return s.Lookup(ctx, p)
}

// Lookup fetches p's record from the DHT, whose validator has already
// checked it; it is checked again here before it is believed.
func (s *Service) Lookup(ctx context.Context, p peer.ID) (View, error) {
	raw, err := s.cfg.DHT.GetValue(ctx, Key(p))
	if errors.Is(err, routing.ErrNotFound) {
		s.forget(p)
		return View{Peer: p, Status: Offline}, nil
	}
	if err != nil {
		return View{Peer: p, Status: Offline}, fmt.Errorf("presence: look up %s: %w", p, err)
	}
	v, err := s.learn(p, raw, "dht")
	if errors.Is(err, ErrExpired) {
		return View{Peer: p, Status: Offline}, nil
	}
	return v, err
}

// learn verifies a record of p's (from the DHT or a NOTIFY), keeps it if it
// is newer than what we had, and returns the view it gives.
func (s *Service) learn(p peer.ID, raw []byte, source string) (View, error) {
	return s.learnRecord(p, raw, source, false)
}

// learnRecord is learn; reread also takes the same record again (a key to
// open it just arrived).
func (s *Service) learnRecord(p peer.ID, raw []byte, source string, reread bool) (View, error) {
	now := s.cfg.Now()
	rec, err := Parse(raw)
	if err != nil {
		return View{Peer: p, Status: Offline}, err
	}
	if err := s.cfg.Checked.Verify(Key(p), rec, now); err != nil {
		return View{Peer: p, Status: Offline}, err
	}
	v := View{Peer: p, Status: Offline, Seq: rec.Seq, Updated: now, Expires: time.UnixMilli(rec.ExpiresAt), Source: source}
	body, err := OpenBody(rec, s.peerKey(p))
	switch {
	case errors.Is(err, ErrNoKey):
		// Hidden from us: shown exactly as an offline user.
	case err != nil:
		return View{Peer: p, Status: Offline}, err
	default:
		v.Status, v.Note = statusOf(body.Status), body.Note
		for _, b := range body.Addrs {
			if a, err := ma.NewMultiaddrBytes(b); err == nil {
				v.Addrs = append(v.Addrs, a)
			}
		}
		if v.Status == Offline {
			v.Addrs = nil
		}
	}
	s.mu.Lock()
	old := s.cache[p]
	if old != nil && (old.seq > rec.Seq || old.seq == rec.Seq && !reread) {
		s.mu.Unlock()
		return old.view, nil // a rollback, or the same record again: keep what we have
	}
	if old == nil && len(s.cache) >= maxCached && !s.policy.Load().Contacts[p] {
		s.mu.Unlock()
		return v, nil // strangers looked up by hand are not kept once the cache is full
	}
	changed := old == nil || old.view.Status != v.Status || old.view.Note != v.Note
	s.cache[p] = &cached{raw: raw, seq: rec.Seq, view: v, fetched: now, source: source}
	if _, isQuiet := s.quiet[p]; v.Status == Offline && source == "notify" && !isQuiet {
		// A contact's own word that it left: no need to look it up at the
		// next watch, only later, in case it came back and cannot tell us.
		s.quietFor(p, now)
		if until, ok := s.watchers[p]; ok && now.Before(until) {
			// It watches us, so when it is back it subscribes again (its
			// first watch looks us up), and we subscribe back (see handle):
			// it does tell us. A look is left only as the safety net.
			s.quiet[p] = quiet{next: now.Add(maxQuiet), gap: maxQuiet}
		}
	}
	s.mu.Unlock()
	if len(v.Addrs) > 0 {
		// Direct delivery dials these without a DHT lookup.
		s.cfg.Host.Peerstore().AddAddrs(p, v.Addrs, peerstore.RecentlyConnectedAddrTTL)
	}
	if changed {
		s.cfg.OnChange(v)
	}
	return v, nil
}

func (s *Service) forget(p peer.ID) {
	s.mu.Lock()
	c := s.cache[p]
	delete(s.cache, p)
	s.mu.Unlock()
	if c != nil && c.view.Status != Offline {
		s.cfg.OnChange(View{Peer: p, Status: Offline})
	}
}

// maxCached bounds the records kept of peers who are not contacts.
const maxCached = 4096

// unwatchedFresh is how long a record is believed without a subscription
// that would push its changes.
const unwatchedFresh = 30 * time.Second

// Cached returns what this node knows of p without asking anyone: the last
// record while p pushes its changes to us, or while it is recent. Otherwise
// p shows as offline.
func (s *Service) Cached(p peer.ID) (View, bool) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cache[p]
	if c == nil || now.After(c.view.Expires) {
		return View{Peer: p, Status: Offline}, false
	}
	until, watched := s.subs[p]
	if (watched && now.Before(until)) || now.Sub(c.fetched) < unwatchedFresh {
		return c.view, true
	}
	return View{Peer: p, Status: Offline}, false
}

// Unwatch forgets our subscription to p: its connection is gone, so its
// changes no longer reach us (it may have stopped, or hidden from us).
func (s *Service) Unwatch(p peer.ID) {
	s.mu.Lock()
	delete(s.subs, p)
	if s.policy.Load().Contacts[p] { // bounded by the contacts
		s.unwatched[p]++
	}
	s.mu.Unlock()
}
