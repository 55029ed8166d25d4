package presence

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio/pbio"

	"github.com/parley-p2p/parley/internal/exchange"
	"github.com/parley-p2p/parley/internal/jitter"
	"github.com/parley-p2p/parley/internal/pb"
)

// ProtocolID is the SUBSCRIBE/NOTIFY protocol.
const ProtocolID protocol.ID = "/parley/presence/1.0.0"

const (
	// MaxFrame bounds one frame of the watch protocol: a record and change.
	MaxFrame = MaxRecordSize + 256
	// MaxTTL bounds the subscription a watcher can ask for.
	MaxTTL = time.Hour
	// streamTimeout bounds one exchange.
	streamTimeout = 10 * time.Second
	// notifyParallel bounds the NOTIFYs in flight at once.
	notifyParallel = 16
)

// handle serves one inbound stream: a SUBSCRIBE (answered with a NOTIFY of
// the current record) or a NOTIFY pushed by a contact we watch.
func (s *Service) handle(str network.Stream) {
	defer str.Close()
	remote := str.Conn().RemotePeer()
	_ = str.SetDeadline(s.cfg.Now().Add(streamTimeout))
	var f pb.PresenceFrame
	if err := exchange.ReadMsg(str, MaxFrame, &f); err != nil {
		s.cfg.Logger.Debug("presence: bad frame", "peer", remote, "err", err)
		str.Reset()
		return
	}
	switch fr := f.Frame.(type) {
	case *pb.PresenceFrame_Subscribe:
		granted := s.subscribed(remote, time.Duration(fr.Subscribe.TtlSeconds)*time.Second)
		s.keepConns()
		// A contact who subscribes is online: watch it back if we do not.
		// Only when granted, so two peers hidden from each other do not
		// bounce subscriptions back and forth.
		s.mu.Lock()
		_, watching := s.subs[remote]
		s.mu.Unlock()
		if granted > 0 && !watching {
			s.Kick(remote)
		}
		s.mu.Lock()
		rec := s.current
		s.mu.Unlock()
		reply := &pb.PresenceFrame{Frame: &pb.PresenceFrame_Notify{Notify: &pb.Notify{Record: rec, GrantedSeconds: uint32(granted / time.Second)}}}
		if err := pbio.NewDelimitedWriter(str).WriteMsg(reply); err != nil {
			str.Reset()
		}
	case *pb.PresenceFrame_Notify:
		if !s.policy.Load().Contacts[remote] || len(fr.Notify.Record) == 0 {
			return // only contacts' changes are kept: the cache stays bounded
		}
		if fr.Notify.Ended {
			s.Unwatch(remote)
		}
		if _, err := s.learn(remote, fr.Notify.Record, "notify"); err != nil {
			s.cfg.Logger.Warn("presence: rejected NOTIFY", "peer", remote, "err", err)
		}
	default:
		str.Reset()
	}
}

// subscribed registers (or with ttl 0 removes) watcher p and returns the
// lifetime granted: zero for a peer who may not see the user, or when the
// table is full. One entry per peer, so repeating SUBSCRIBE costs nothing.
func (s *Service) subscribed(p peer.ID, ttl time.Duration) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ttl <= 0 || !s.policy.Load().MaySee(p) {
		delete(s.watchers, p)
		return 0
	}
	now := s.cfg.Now()
	if _, ok := s.watchers[p]; !ok && len(s.watchers) >= s.cfg.MaxWatchers {
		for w, until := range s.watchers { // make room from the lapsed
			if now.After(until) {
				delete(s.watchers, w)
			}
		}
		if len(s.watchers) >= s.cfg.MaxWatchers {
			return 0
		}
	}
	ttl = min(ttl, MaxTTL)
	s.watchers[p] = now.Add(ttl)
	return ttl
}

// Watchers is the number of peers watching the user.
func (s *Service) Watchers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.watchers)
}

// notifyWatchers pushes raw to every watcher still subscribed; a watcher
// that cannot be reached is dropped (it subscribes again when it returns).
func (s *Service) notifyWatchers(ctx context.Context, raw []byte) {
	now := s.cfg.Now()
	pol := s.policy.Load()
	s.mu.Lock()
	var targets []peer.ID
	for w, until := range s.watchers {
		if now.After(until) || !pol.MaySee(w) {
			delete(s.watchers, w)
			continue
		}
		targets = append(targets, w)
	}
	s.mu.Unlock()
	sem := make(chan struct{}, notifyParallel)
	var wg sync.WaitGroup
	for _, w := range targets {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := s.push(ctx, w, raw); err != nil {
				s.mu.Lock()
				delete(s.watchers, w)
				s.mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func (s *Service) push(ctx context.Context, to peer.ID, raw []byte) error {
	return s.pushNotify(ctx, to, &pb.Notify{Record: raw})
}

func (s *Service) pushNotify(ctx context.Context, to peer.ID, n *pb.Notify) error {
	ctx, cancel := context.WithTimeout(ctx, streamTimeout)
	defer cancel()
	f := &pb.PresenceFrame{Frame: &pb.PresenceFrame_Notify{Notify: n}}
	return exchange.Send(network.WithNoDial(ctx, "notify only connected watchers"), s.cfg.Host, to, ProtocolID, f)
}

// Subscribe asks p to push its changes to us, and takes the record p sends
// back as the current one.
func (s *Service) Subscribe(ctx context.Context, p peer.ID) error {
	ctx, cancel := context.WithTimeout(ctx, streamTimeout)
	defer cancel()
	req := &pb.PresenceFrame{Frame: &pb.PresenceFrame_Subscribe{Subscribe: &pb.Subscribe{TtlSeconds: uint32(s.cfg.SubscribeTTL / time.Second)}}}
	s.mu.Lock()
	ended := s.unwatched[p]
	s.mu.Unlock()
	var f pb.PresenceFrame
	if err := exchange.Request(ctx, s.cfg.Host, p, ProtocolID, req, &f, MaxFrame); err != nil {
		return err
	}
	n := f.GetNotify()
	if n == nil {
		return errProtocol
	}
	if len(n.Record) > 0 {
		// The answer to a SUBSCRIBE is the current record, not a push.
		if _, err := s.learn(p, n.Record, "subscribe"); err != nil {
			return err
		}
	}
	s.mu.Lock()
	if s.unwatched[p] != ended {
		// The connection closed while the answer was on its way (p may
		// have just hidden from us, and its goodbye was lost with the
		// connection): no subscription holds. The next watch tries again.
		s.mu.Unlock()
		return errUnwatched
	}
	if n.GrantedSeconds > 0 {
		s.subs[p] = s.cfg.Now().Add(time.Duration(n.GrantedSeconds) * time.Second)
		delete(s.quiet, p)
	} else {
		delete(s.subs, p)
	}
	s.mu.Unlock()
	return nil
}

// Kick asks the watcher loop to subscribe to p now, over the connection p
// is on: p just identified itself on a new connection, or subscribed to us.
func (s *Service) Kick(p peer.ID) {
	if !s.policy.Load().Watches(p) {
		return
	}
	select {
	case s.kick <- p:
	default:
	}
}

// watchLoop keeps a subscription with every contact who is online: on
// start, when one connects, and before each subscription lapses.
func (s *Service) watchLoop(ctx context.Context) {
	defer s.wg.Done()
	every := max(s.cfg.SubscribeTTL/4, time.Second)
	tick := time.NewTimer(jitter.Spread(every))
	defer tick.Stop()
	s.watchAll(ctx)
	s.keepConns()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-s.kick:
			if s.watchedFor(p) > s.cfg.SubscribeTTL/2 {
				// Already watching, and not yet due to renew: kicks come
				// from every new connection and from p subscribing back.
				continue
			}
			if err := s.subscribeKicked(ctx, p); err != nil {
				s.cfg.Logger.Debug("presence: subscribe", "peer", p, "err", err)
			}
		case <-tick.C:
			tick.Reset(jitter.Spread(every))
			s.watchAll(ctx)
		}
		s.keepConns()
	}
}

// subscribeKicked subscribes to p over the connection that kicked it, never
// a new one: if that connection is gone, p left or refuses us (it denied
// us, and closed the connection once the handshake named us), and a dial
// would only repeat that. (A kick comes from an identified connection, so
// such a refused one no longer kicks at all; this keeps the subscription
// from looping back into a dial should that change.)
func (s *Service) subscribeKicked(ctx context.Context, p peer.ID) error {
	return s.Subscribe(network.WithNoDial(ctx, "subscribe over the connection that kicked it"), p)
}

// watchAll subscribes to every contact whose subscription is missing or
// past half its life: at an address already known if it answers there,
// else at the one its record in the DHT gives, if that says it is online.
func (s *Service) watchAll(ctx context.Context) {
	now := s.cfg.Now()
	half := s.cfg.SubscribeTTL / 2
	var wg sync.WaitGroup
	sem := make(chan struct{}, notifyParallel)
	pol := s.policy.Load()
	contacts := pol.Contacts
	s.mu.Lock()
	for c := range s.quiet {
		if !contacts[c] {
			delete(s.quiet, c) // no longer a contact
		}
	}
	s.mu.Unlock()
	for c := range contacts {
		if !pol.Watches(c) {
			continue
		}
		s.mu.Lock()
		until, ok := s.subs[c]
		q, isQuiet := s.quiet[c]
		s.mu.Unlock()
		if ok && until.Sub(now) > half || isQuiet && now.Before(q.next) {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			// Where it is already known to be first: its answer carries its
			// record, and only if it does not answer is the DHT asked.
			if s.subscribeKnown(ctx, c) {
				if s.watchedFor(c) == 0 {
					// It answered but grants us no subscription (it hides
					// from us, or has too many watchers): back off as from
					// one offline.
					s.backOff(c, now)
				}
				return
			}
			v, err := s.Resolve(ctx, c)
			if err != nil || v.Status == Offline {
				s.mu.Lock()
				delete(s.subs, c)
				s.quietFor(c, now)
				s.mu.Unlock()
				return
			}
			if err := s.Subscribe(ctx, c); err != nil {
				// Its record says online, but it cannot be reached: gone
				// without a goodbye (the record lives on until it
				// expires), or behind a NAT. Looking it up at every watch
				// would not change that; if it is online it subscribes to
				// us, and we subscribe back over its connection.
				s.cfg.Logger.Debug("presence: subscribe", "peer", c, "err", err)
				s.backOff(c, now)
			}
		}()
	}
	wg.Wait()
}

// keepConns asks the connection manager to keep the connections presence
// rides on: to each watcher (a NOTIFY is pushed only over a live
// connection) and to each contact we watch. Otherwise the manager trims
// them as idle, the subscription ends with the connection, and renewing it
// costs a DHT lookup and a new handshake — far more than keeping it.
func (s *Service) keepConns() {
	if s.cfg.Host == nil {
		return
	}
	s.keepMu.Lock()
	defer s.keepMu.Unlock()
	now := s.cfg.Now()
	want := map[peer.ID]bool{}
	s.mu.Lock()
	for p, until := range s.watchers {
		want[p] = now.Before(until)
	}
	for p, until := range s.subs {
		want[p] = want[p] || now.Before(until)
	}
	s.mu.Unlock()
	cm := s.cfg.Host.ConnManager()
	for p, keep := range want {
		if keep && !s.kept[p] {
			cm.Protect(p, keepTag)
			s.kept[p] = true
		}
	}
	for p := range s.kept {
		if !want[p] {
			cm.Unprotect(p, keepTag)
			delete(s.kept, p)
			continue
		}
		s.pruneDuplicates(p)
	}
}

// pruneDuplicates closes a spare connection to a peer kept for presence.
// When both ends dial each other at once (both add the other, both come
// back) two connections come up, and kept, neither would ever be trimmed:
// keep-alives and about three goroutines each, for nothing. Both ends agree
// which to keep — one dialled by the lesser peer ID — and close only the
// other kind, once it is past its first seconds and while it carries no
// stream (new streams go to the busier connection, so it stays idle).
func (s *Service) pruneDuplicates(p peer.ID) {
	conns := s.cfg.Host.Network().ConnsToPeer(p)
	if len(conns) < 2 {
		return
	}
	self := s.cfg.Host.ID()
	preferred := func(c network.Conn) bool {
		if c.Stat().Direction == network.DirInbound {
			return p < self
		}
		return self < p
	}
	if !slices.ContainsFunc(conns, preferred) {
		return
	}
	for _, c := range conns {
		if !preferred(c) && len(c.GetStreams()) == 0 && time.Since(c.Stat().Opened) > spareAge {
			_ = c.Close()
		}
	}
}

// spareAge is how old a spare connection must be before it is closed: its
// first streams (identify, the exchange it was dialled for) are done. It is
// read on the host's clock (connections are stamped with it), not cfg.Now.
var spareAge = 10 * time.Second

const keepTag = "parley-presence"

// quiet spaces the lookups of a contact found offline. Each look costs a DHT
// walk, and a contact who comes back says so itself: it subscribes to its
// contacts, and we subscribe back (see handle), or it connects (Kick). So
// the looks are only a safety net, and back off from a quarter of the
// subscription's life to maxQuiet.
type quiet struct {
	next time.Time
	gap  time.Duration
}

const maxQuiet = time.Hour

// quietFor notes that c was found offline at now; s.mu is held.
func (s *Service) quietFor(c peer.ID, now time.Time) {
	q := s.quiet[c]
	q.gap = min(max(2*q.gap, s.cfg.SubscribeTTL/4, time.Second), maxQuiet)
	q.next = now.Add(q.gap)
	s.quiet[c] = q
}

// backOff is quietFor for a contact that answered, or whose record
// answered, without a subscription coming of it.
func (s *Service) backOff(c peer.ID, now time.Time) {
	s.mu.Lock()
	s.quietFor(c, now)
	s.mu.Unlock()
}

// watchedFor is how long our subscription to p still holds (0 if none).
func (s *Service) watchedFor(p peer.ID) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.subs[p]
	if !ok {
		return 0
	}
	return max(until.Sub(s.cfg.Now()), 0)
}

// Watching reports whether p pushes its changes to us (a live subscription).
func (s *Service) Watching(p peer.ID) bool { return s.watchedFor(p) > 0 }
