package presence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/store"
)

// Status is what the user chose to show. Invisible shows as offline to
// everyone while the node keeps working.
type Status string

// The statuses a user can set.
const (
	Online    Status = "online"
	Away      Status = "away"
	Busy      Status = "busy"
	Invisible Status = "invisible"
	Offline   Status = "offline" // what others see of an absent or hidden user
)

// ParseStatus checks a status given by the user.
func ParseStatus(s string) (Status, error) {
	switch st := Status(s); st {
	case Online, Away, Busy, Invisible:
		return st, nil
	}
	return "", fmt.Errorf("unknown status %q: use online, away, busy or invisible", s)
}

func (s Status) wire() pb.Status {
	switch s {
	case Online:
		return pb.Status_ONLINE
	case Away:
		return pb.Status_AWAY
	case Busy:
		return pb.Status_BUSY
	}
	return pb.Status_OFFLINE
}

func statusOf(w pb.Status) Status {
	switch w {
	case pb.Status_ONLINE:
		return Online
	case pb.Status_AWAY:
		return Away
	case pb.Status_BUSY:
		return Busy
	}
	return Offline
}

// Lists of peers kept in the store.
const (
	ListAllow = "allow"
	ListDeny  = "deny"
	ListBlock = "block"
)

// Settings in the store.
const (
	settingStatus     = "presence/status"
	settingVisibility = "presence/visibility"
	settingKey        = "presence/key"
	settingHolders    = "presence/holders"
	settingSeq        = "presence/seq"
	settingPeerKey    = "presence/peerkey/"
)

// DHT is what the service needs of the DHT.
type DHT interface {
	// Put stores a record at the peers closest to key, found by a lookup,
	// and says how many accepted it and which were asked.
	Put(ctx context.Context, key string, value []byte) (accepted int, asked []peer.ID, err error)
	// PutTo stores a record at the given peers, with no lookup, and says
	// how many accepted it.
	PutTo(ctx context.Context, key string, value []byte, peers []peer.ID) (accepted int)
	GetValue(ctx context.Context, key string) ([]byte, error)
	// Nearest is the n peers the routing table holds nearest key, with no
	// lookup.
	Nearest(key string, n int) []peer.ID
}

// Config says how to build the service. Zero durations take the defaults.
type Config struct {
	Identity *identity.Identity
	Host     host.Host
	DHT      DHT
	Store    *store.Store
	// SendKey queues a presence key for a contact, durably, end to end
	// encrypted (the node routes it through the outbox).
	SendKey func(to peer.ID, key PresenceKey) error
	// OnChange is told every time a contact's presence as seen here
	// changes. It must not block.
	OnChange func(View)

	Lifetime     time.Duration // a record's lifetime; default DefaultLifetime
	Republish    time.Duration // republish interval; default DefaultRepublish
	Retry        time.Duration // republish when too few peers stored it; default 30 s
	SubscribeTTL time.Duration // SUBSCRIBE lifetime, renewed at half; default 10 min
	MinAccepted  int           // peers that must store a record; default 3 (fewer if fewer exist)
	MaxWatchers  int           // bound on the watcher table; default 1024
	Now          func() time.Time
	Logger       *slog.Logger
	// Checked, when set, remembers good signatures; share it with the
	// DHT's validator (see Checked).
	Checked *Checked
}

// Service is one node's presence: its own record and its view of contacts.
type Service struct {
	cfg  Config
	self peer.ID

	policy atomic.Pointer[Policy]

	mu       sync.Mutex
	status   Status
	note     string
	key      *PresenceKey        // current key, when records are sealed
	current  []byte              // the record last published
	seq      uint64              // its seq
	stats    PublishStats        // how the last publication went
	cache    map[peer.ID]*cached // contacts' records as seen here
	watchers map[peer.ID]time.Time
	subs     map[peer.ID]time.Time // our subscriptions and when they lapse
	quiet    map[peer.ID]quiet     // contacts found offline: when to look again
	// unwatched counts, per contact, the subscriptions ended by Unwatch: a
	// SUBSCRIBE answered before its connection closed, but read after,
	// must not start the subscription again (see Subscribe).
	unwatched map[peer.ID]uint64
	keepMu    sync.Mutex       // serializes keepConns
	kept      map[peer.ID]bool // peers whose connections we asked to keep

	changed chan struct{} // asks the publisher to publish now
	relook  chan struct{} // the same, with a fresh lookup of the key's neighbourhood
	pending chan storeReq // the newest record, waiting to be stored in the DHT
	// near are the peers closest to the record's key that the last lookup
	// found, at nearAt; guarded by mu.
	near    []peer.ID
	nearAt  time.Time
	kick    chan peer.ID // asks the watcher loop to subscribe to a peer
	cancel  context.CancelFunc
	started atomic.Bool // Start ran: Republish has a publisher to ask
	wg      sync.WaitGroup
	closed  bool
}

// PublishStats says how the last publication went.
type PublishStats struct {
	Seq      uint64    `json:"seq"`
	At       time.Time `json:"at"`
	Accepted int       `json:"accepted"`
	Asked    int       `json:"asked"`
}

// DefaultLifetime is how long a presence record is valid unless configured
// otherwise: how long a node that vanished without a goodbye can still
// read as online to someone who is not watching it (a watcher sees its
// connection go within QUIC's idle timeout).
const DefaultLifetime = 30 * time.Minute

// DefaultRepublish is how often a node stores its presence record again
// unless configured otherwise: at half the record's lifetime, so that a
// republish that fails (retried every Retry) still has a quarter of an
// hour before the copies lapse. Records are handed on to servers that join
// near the key (dht), so a republish only replaces holders that left, and
// it is a walk and eight stores each time: every 10 minutes, republishes
// were a third of the connections a node opened in a simulated swarm
// with 20 % churn an hour, and at 15 every record still resolved.
const DefaultRepublish = 15 * time.Minute

// New builds the service from its stored state; Start runs it.
func New(cfg Config) (*Service, error) {
	if cfg.Lifetime == 0 {
		cfg.Lifetime = DefaultLifetime
	}
	if cfg.Republish == 0 {
		cfg.Republish = DefaultRepublish
	}
	if cfg.Retry == 0 {
		cfg.Retry = 30 * time.Second
	}
	if cfg.SubscribeTTL == 0 {
		cfg.SubscribeTTL = 10 * time.Minute
	}
	if cfg.MinAccepted == 0 {
		cfg.MinAccepted = 3
	}
	if cfg.MaxWatchers == 0 {
		cfg.MaxWatchers = 1024
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnChange == nil {
		cfg.OnChange = func(View) {}
	}
	if cfg.SendKey == nil {
		cfg.SendKey = func(peer.ID, PresenceKey) error { return errors.New("presence: no way to send keys") }
	}
	s := &Service{
		cfg: cfg, self: cfg.Identity.ID(), status: Online,
		cache: map[peer.ID]*cached{}, watchers: map[peer.ID]time.Time{}, subs: map[peer.ID]time.Time{},
		quiet: map[peer.ID]quiet{}, kept: map[peer.ID]bool{}, unwatched: map[peer.ID]uint64{},
		changed: make(chan struct{}, 1), relook: make(chan struct{}, 1), pending: make(chan storeReq, 1), kick: make(chan peer.ID, 64),
	}
	var saved struct {
		Status Status `json:"status"`
		Note   string `json:"note"`
	}
	if ok, err := cfg.Store.Setting(settingStatus, &saved); err != nil {
		return nil, err
	} else if ok {
		s.status, s.note = saved.Status, saved.Note
	}
	if _, err := cfg.Store.Setting(settingSeq, &s.seq); err != nil {
		return nil, err
	}
	var key PresenceKey
	if ok, err := cfg.Store.Setting(settingKey, &key); err != nil {
		return nil, err
	} else if ok && key.Valid() {
		s.key = &key
	}
	if err := s.reloadPolicy(); err != nil {
		return nil, err
	}
	return s, nil
}

// Start registers the watch protocol and starts publishing and watching.
func (s *Service) Start(ctx context.Context) error {
	ctx, s.cancel = context.WithCancel(ctx)
	s.cfg.Host.SetStreamHandler(ProtocolID, s.handle)
	if err := s.syncKeys(); err != nil {
		s.cfg.Logger.Warn("presence: cannot share keys", "err", err)
	}
	if err := s.restoreAddrs(); err != nil {
		s.cfg.Logger.Warn("presence: cannot read the contacts' last addresses", "err", err)
	}
	s.wg.Add(3)
	s.started.Store(true)
	go s.publishLoop(ctx)
	go s.storeLoop(ctx)
	go s.watchLoop(ctx)
	return nil
}

// Close saves where the contacts were, publishes the user as offline,
// tells the watchers, and stops.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed || s.cancel == nil {
		s.closed = true
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cfg.Host.RemoveStreamHandler(ProtocolID)
	s.cancel()
	s.wg.Wait()
	if err := s.saveAddrs(); err != nil {
		s.cfg.Logger.Warn("presence: cannot save the contacts' last addresses", "err", err)
	}
	// Best effort, and brief: shutting down must not hang on peers that
	// left before us. Alone, there is nobody to tell.
	if len(s.cfg.Host.Network().Peers()) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.publishOffline(ctx)
	return nil
}

// Status is the user's own status and note.
func (s *Service) Status() (Status, string, PublishStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status, s.note, s.stats
}

// SetStatus changes the user's status and note and publishes them at once;
// watchers hear of it before it is even saved.
func (s *Service) SetStatus(st Status, note string) error {
	if len(note) > MaxNote {
		return fmt.Errorf("the note is %d bytes; the limit is %d", len(note), MaxNote)
	}
	s.mu.Lock()
	s.status, s.note = st, note
	s.mu.Unlock()
	s.republishNow()
	return s.cfg.Store.PutSetting(settingStatus, struct {
		Status Status `json:"status"`
		Note   string `json:"note"`
	}{st, note})
}

// MaxNote bounds a status note.
const MaxNote = 256

// Visibility is the user's visibility mode.
func (s *Service) Visibility() Visibility { return s.policy.Load().Mode }

// SetVisibility changes who may see the user, rotating or sharing the
// presence key as needed, and publishes at once.
func (s *Service) SetVisibility(v Visibility) error {
	if err := s.cfg.Store.PutSetting(settingVisibility, v); err != nil {
		return err
	}
	return s.PolicyChanged()
}

// PolicyChanged reloads contacts and lists from the store, shares or
// rotates the key, and republishes when the record changes with it. Call it
// after any change to contacts, allow, deny or block lists.
func (s *Service) PolicyChanged() error {
	wasSealed := s.policy.Load().Sealed()
	s.mu.Lock()
	oldKey := s.key
	s.mu.Unlock()
	if err := s.reloadPolicy(); err != nil {
		return err
	}
	if err := s.syncKeys(); err != nil {
		return err
	}
	s.mu.Lock()
	p := s.policy.Load()
	var ended []peer.ID
	for w := range s.watchers {
		if !p.MaySee(w) {
			delete(s.watchers, w)
			ended = append(ended, w)
		}
	}
	for c := range s.subs {
		if !p.Watches(c) {
			delete(s.subs, c) // lapses at c's end; our connection is no longer kept for it
		}
	}
	s.mu.Unlock()
	s.keepConns()
	if len(ended) > 0 && s.cfg.Host != nil {
		// Tell each watcher who lost sight of us, before anything else can
		// cut the connection: its subscription is over, and this record
		// (sealed with the new key) is what it may still see — an offline user.
		if _, raw, err := s.sign(false); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
			for _, w := range ended {
				_ = s.pushNotify(ctx, w, &pb.Notify{Record: raw, Ended: true})
			}
			cancel()
		}
	}
	// A record is sealed or not, and with one key: a new contact given the
	// current key reads the record already out there, so adding one costs
	// no DHT store (a node befriending its contacts would otherwise store
	// its record once per contact).
	s.mu.Lock()
	rekeyed := s.key != oldKey
	s.mu.Unlock()
	if rekeyed || wasSealed != s.policy.Load().Sealed() || len(ended) > 0 {
		s.republishNow()
	}
	return nil
}

// Refuses reports whether connections from p must be refused.
func (s *Service) Refuses(p peer.ID) bool { return s.policy.Load().Refused(p) }

// Blocked reports whether p is blocked.
func (s *Service) Blocked(p peer.ID) bool { return s.policy.Load().Blocked[p] }

// Policy is the current visibility policy.
func (s *Service) Policy() Policy { return *s.policy.Load() }

func (s *Service) reloadPolicy() error {
	p := Policy{Mode: Contacts}
	var mode Visibility
	if ok, err := s.cfg.Store.Setting(settingVisibility, &mode); err != nil {
		return err
	} else if ok {
		p.Mode = mode
	}
	cs, err := s.cfg.Store.Contacts()
	if err != nil {
		return err
	}
	p.Contacts = map[peer.ID]bool{}
	for _, c := range cs {
		p.Contacts[c.ID] = true
	}
	if p.Allowed, err = s.cfg.Store.Marked(ListAllow); err != nil {
		return err
	}
	if p.Denied, err = s.cfg.Store.Marked(ListDeny); err != nil {
		return err
	}
	if p.Blocked, err = s.cfg.Store.Marked(ListBlock); err != nil {
		return err
	}
	s.policy.Store(&p)
	return nil
}

// syncKeys makes sure exactly the contacts who may see the user hold the
// current presence key: a new key when someone lost access, the current
// one for newcomers.
func (s *Service) syncKeys() error {
	p := s.policy.Load()
	if !p.Sealed() {
		return nil
	}
	var saved []string // peer IDs in text: JSON map keys would not round-trip
	if _, err := s.cfg.Store.Setting(settingHolders, &saved); err != nil {
		return err
	}
	had := map[peer.ID]bool{}
	for _, h := range saved {
		if id, err := peer.Decode(h); err == nil {
			had[id] = true
		}
	}
	want := p.KeyHolders()
	plan := PlanKeys(had, want)
	s.mu.Lock()
	if s.key == nil || plan.Rotate {
		k := NewPresenceKey()
		s.key = &k
		plan = PlanKeys(nil, want) // everyone gets the new key
	}
	key := *s.key
	s.mu.Unlock()
	if err := s.cfg.Store.PutSetting(settingKey, key); err != nil {
		return err
	}
	for _, to := range plan.SendTo {
		if err := s.cfg.SendKey(to, key); err != nil {
			return fmt.Errorf("presence: send key to %s: %w", to, err)
		}
	}
	saved = saved[:0]
	for h := range want {
		saved = append(saved, h.String())
	}
	return s.cfg.Store.PutSetting(settingHolders, saved)
}

// AcceptKey stores the presence key a contact sent, and re-reads that
// contact's cached record with it.
func (s *Service) AcceptKey(from peer.ID, key PresenceKey) error {
	if !key.Valid() {
		return fmt.Errorf("presence: malformed key from %s", from)
	}
	if err := s.cfg.Store.PutSetting(settingPeerKey+string(from), key); err != nil {
		return err
	}
	s.mu.Lock()
	c := s.cache[from]
	s.mu.Unlock()
	if c != nil {
		s.learnRecord(from, c.raw, c.source, true)
	}
	return nil
}

func (s *Service) peerKey(p peer.ID) *PresenceKey {
	var k PresenceKey
	if ok, err := s.cfg.Store.Setting(settingPeerKey+string(p), &k); err != nil || !ok || !k.Valid() {
		return nil
	}
	return &k
}

// Republish stores a new record now, looking the key's neighbourhood up
// afresh: call it when the network around the node may have changed (back
// in touch after being cut off from everyone), since a change otherwise
// goes to the peers the last lookup found. Another follows early, as after
// joining. Before Start it does nothing: Start publishes with a fresh
// lookup anyway (a node's first connection, as it joins, looks like being
// back in touch).
func (s *Service) Republish() {
	if !s.started.Load() {
		return
	}
	select {
	case s.relook <- struct{}{}:
	default:
	}
}

func (s *Service) republishNow() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// OwnKeyID is the id of the current presence key (nil when records are
// plain and no key was made yet).
func (s *Service) OwnKeyID() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.key == nil {
		return nil
	}
	return s.key.ID
}

// KeyOf is the presence key p shared with us, if any.
func (s *Service) KeyOf(p peer.ID) *PresenceKey { return s.peerKey(p) }

// DHTValue fetches p's raw record from the DHT, unverified (for tools and
// tests that inspect what an observer sees).
func (s *Service) DHTValue(ctx context.Context, p peer.ID) ([]byte, error) {
	return s.cfg.DHT.GetValue(ctx, Key(p))
}

// Current is the signed record last published (nil before the first).
func (s *Service) Current() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}
