// Package outbox is the sender's side of delivery: a durable queue of
// messages not yet delivered, tried at once and then retried with backoff,
// and the state each message is in. The schedule is a pure core; Outbox is
// the thin loop that runs it against the store and the transport.
package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/direct"
	"github.com/parley-p2p/parley/inbox"
	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/store"
)

// Transport carries a batch of messages to a peer; direct.Service is one.
type Transport interface {
	Send(ctx context.Context, to peer.ID, msgs []*pb.Message) ([]direct.Result, error)
}

// Depositor leaves a message with the recipient's replicas; inbox.Sender
// is one.
type Depositor interface {
	Leave(ctx context.Context, m *pb.Message) (inbox.Stored, error)
}

// Config tunes the outbox. Zero values take the defaults.
type Config struct {
	Backoff        Backoff       // default 1 s doubling to 5 min
	MaxAge         time.Duration // a message undelivered for so long fails; default 7 days
	AttemptTimeout time.Duration // one delivery attempt; default 20 s
	// Inbox, when set, takes the messages a direct attempt could not
	// deliver; DirectBudget then bounds the direct attempt (default 3 s).
	Inbox        Depositor
	DirectBudget time.Duration
	// Quorum is how many replicas must hold a message before the sender
	// stops depositing it (the write quorum w); default 3.
	Quorum int
	// Online, when set, says whether a peer is connected now: a message
	// just parked at replicas for a peer that came online meanwhile is
	// tried directly again (at most every 30 s per peer).
	Online func(peer.ID) bool
	Now    func() time.Time
	Logger *slog.Logger
	// OnState is called after each persisted state change. It must not block.
	OnState func(store.Update)
}

// Outbox queues, sends and retries outgoing messages.
type Outbox struct {
	self  peer.ID
	store *store.Store
	tr    Transport
	cfg   Config

	kick chan struct{}

	mu      sync.Mutex
	sched   *schedule
	waiters map[string][]chan struct{} // by message id, woken on any terminal state
	rewoken map[peer.ID]time.Time      // when a peer was last woken after parking
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

var (
	// ErrEmpty means the body of a message is empty.
	ErrEmpty = errors.New("outbox: message is empty")
	// ErrTooLarge means the body of a message is over direct.MaxBody.
	ErrTooLarge = fmt.Errorf("outbox: message is over %d bytes", direct.MaxBody)
)

// New returns an Outbox; Start loads what the store still holds.
func New(self peer.ID, st *store.Store, tr Transport, cfg Config) *Outbox {
	if cfg.Backoff.Base == 0 {
		cfg.Backoff = Backoff{Base: time.Second, Max: 5 * time.Minute}
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 7 * 24 * time.Hour
	}
	if cfg.AttemptTimeout == 0 {
		cfg.AttemptTimeout = 20 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DirectBudget == 0 {
		cfg.DirectBudget = 3 * time.Second
	}
	if cfg.Quorum == 0 {
		cfg.Quorum = 3
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnState == nil {
		cfg.OnState = func(store.Update) {}
	}
	return &Outbox{
		self: self, store: st, tr: tr, cfg: cfg,
		kick:    make(chan struct{}, 1),
		sched:   newSchedule(cfg.Backoff, cfg.MaxAge, direct.MaxBatch, cfg.Quorum),
		waiters: make(map[string][]chan struct{}),
		rewoken: make(map[peer.ID]time.Time),
	}
}

// Start reloads undelivered messages from the store and starts the loop.
func (o *Outbox) Start(ctx context.Context) error {
	pending, err := o.store.Pending()
	if err != nil {
		return fmt.Errorf("outbox: load: %w", err)
	}
	now := o.cfg.Now()
	o.mu.Lock()
	for _, m := range pending {
		if m.State != store.Stored { // those wait, parked, for the peer
			o.sched.add(m, now)
		}
	}
	o.mu.Unlock()
	ctx, o.cancel = context.WithCancel(ctx)
	o.wg.Add(1)
	go o.run(ctx)
	return nil
}

// Close stops the loop and waits for attempts in flight to end.
func (o *Outbox) Close() error {
	if o.cancel != nil {
		o.cancel()
	}
	o.wg.Wait()
	return nil
}

// Queue persists a new message to p and schedules it, without waiting.
func (o *Outbox) Queue(to peer.ID, kind pb.Kind, body []byte) (*store.Message, error) {
	m, err := o.queue(to, kind, body, nil)
	if err != nil {
		return nil, err
	}
	o.poke()
	return m, nil
}

// queue persists a message and schedules it; woken, if not nil, is closed
// once the message is delivered or fails. It is registered together with
// the scheduling, so no outcome can be missed.
func (o *Outbox) queue(to peer.ID, kind pb.Kind, body []byte, woken chan struct{}) (*store.Message, error) {
	if len(body) == 0 {
		return nil, ErrEmpty
	}
	if len(body) > direct.MaxBody {
		return nil, ErrTooLarge
	}
	now := o.cfg.Now()
	m := &store.Message{
		ID: direct.NewID(), Peer: to, Outgoing: true, SentAt: now, At: now,
		Kind: int32(kind), Body: body, State: store.Queued,
	}
	if err := o.store.Queue(m); err != nil {
		return nil, err
	}
	o.mu.Lock()
	if woken != nil {
		o.waiters[string(m.ID)] = append(o.waiters[string(m.ID)], woken)
	}
	o.sched.add(m, now)
	o.mu.Unlock()
	o.cfg.OnState(store.Update{Peer: to, ID: m.ID, State: store.Queued})
	return m, nil
}

// Send persists a new text message to p, then waits until it is delivered
// or fails, or until ctx ends, and returns the message in the state it
// reached. A message still queued when ctx ends stays in the outbox.
func (o *Outbox) Send(ctx context.Context, to peer.ID, kind pb.Kind, body []byte) (*store.Message, error) {
	woken := make(chan struct{})
	m, err := o.queue(to, kind, body, woken)
	if err != nil {
		return nil, err
	}
	o.poke()
	select {
	case <-woken:
	case <-ctx.Done():
		o.mu.Lock()
		delete(o.waiters, string(m.ID))
		o.mu.Unlock()
	}
	return o.store.Get(to, m.ID, true)
}

// Wake retries p at once, skipping its backoff, and tries directly the
// messages that wait for p at replicas; call it when p is seen online.
//
// Every message the store still holds for p is scheduled, not only those
// it records as parked: an attempt that parks a message drops it from the
// schedule before its new state is persisted, and the store is read before
// the lock is taken, so a message parked in that gap is still Queued in
// what Wake read and in no schedule. (Scheduling a message twice is
// harmless: add keeps one, and the recipient deduplicates.)
func (o *Outbox) Wake(p peer.ID) {
	now := o.cfg.Now()
	pending, err := o.store.PendingTo(p)
	if err != nil {
		o.cfg.Logger.Error("outbox: load parked messages", "err", err)
	}
	o.mu.Lock()
	for _, m := range pending {
		o.sched.add(m, now)
	}
	woke := o.sched.wake(p, now)
	o.mu.Unlock()
	o.cfg.Logger.Debug("outbox: wake", "peer", p, "waiting", woke)
	if woke {
		o.poke()
	}
}

// Settle records what a recipient's receipt says of our messages to it:
// delivered (fetched from replicas) or read.
func (o *Outbox) Settle(from peer.ID, ids [][]byte, state store.State) {
	updates := make([]store.Update, 0, len(ids))
	drop := map[string]bool{}
	for _, id := range ids {
		if _, err := o.store.Get(from, id, true); err != nil {
			continue // not ours to settle
		}
		updates = append(updates, store.Update{Peer: from, ID: id, State: state})
		drop[string(id)] = true
	}
	o.mu.Lock()
	o.sched.drop(from, drop)
	o.mu.Unlock()
	o.record(updates)
}

// Pending is the number of messages in the outbox.
func (o *Outbox) Pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sched.pending()
}

func (o *Outbox) poke() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

func (o *Outbox) run(ctx context.Context) {
	defer o.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		o.mu.Lock()
		attempts, expired := o.sched.take(o.cfg.Now())
		next, ok := o.sched.next()
		o.mu.Unlock()
		o.record(expired)
		for _, a := range attempts {
			o.wg.Add(1)
			go o.deliver(ctx, a)
		}
		// With nothing scheduled the timer is stopped rather than set far
		// ahead: a pending timer costs the runtime's timer upkeep (and a
		// simulated swarm's, thousands of nodes' worth) for nothing.
		if ok {
			timer.Reset(max(next.Sub(o.cfg.Now()), 0))
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			return
		case <-o.kick:
		case <-timer.C:
		}
	}
}

// deliver makes one attempt — directly, then through the replicas for what
// did not get through — and feeds its outcome back to the schedule.
func (o *Outbox) deliver(ctx context.Context, a attempt) {
	defer o.wg.Done()
	msgs := make([]*pb.Message, len(a.msgs))
	for i, m := range a.msgs {
		msgs[i] = &pb.Message{Id: m.ID, From: []byte(o.self), To: []byte(a.peer), SentAt: m.SentAt.UnixMilli(), Kind: pb.Kind(m.Kind), Body: m.Body, Seq: m.Seq}
	}
	budget := o.cfg.AttemptTimeout
	if o.cfg.Inbox != nil {
		budget = o.cfg.DirectBudget
	}
	actx, cancel := context.WithTimeout(ctx, budget)
	results, err := o.tr.Send(actx, a.peer, msgs)
	cancel()
	outcomes := make([]outcome, len(msgs))
	if err == nil {
		for i, r := range results {
			outcomes[i] = outcome{delivered: r.OK, reason: r.Reason}
		}
	} else {
		if ctx.Err() == nil {
			o.cfg.Logger.Debug("outbox: direct delivery failed", "peer", a.peer, "messages", len(msgs), "err", err)
		}
		if o.cfg.Inbox != nil {
			o.leave(ctx, a, msgs, outcomes)
		}
	}
	o.mu.Lock()
	updates := o.sched.done(a.peer, outcomes, o.cfg.Now())
	o.mu.Unlock()
	o.record(updates)
	if o.cfg.Logger.Enabled(ctx, slog.LevelDebug) {
		var delivered, stored int
		for _, r := range outcomes {
			if r.delivered {
				delivered++
			} else if r.replicas > 0 {
				stored++
			}
		}
		o.cfg.Logger.Debug("outbox: attempt", "peer", a.peer, "messages", len(msgs), "delivered", delivered, "stored", stored)
	}
	if err != nil && o.cfg.Online != nil && o.cfg.Online(a.peer) {
		// The peer connected while we were leaving its messages with the
		// replicas: give the direct path another go rather than wait for
		// the next sign of it.
		o.mu.Lock()
		now := o.cfg.Now()
		again := now.Sub(o.rewoken[a.peer]) >= 30*time.Second
		if again {
			o.rewoken[a.peer] = now
		}
		o.mu.Unlock()
		if again {
			o.Wake(a.peer)
		}
	}
	o.poke()
}

// leave deposits with the replicas each message not already held there.
func (o *Outbox) leave(ctx context.Context, a attempt, msgs []*pb.Message, outcomes []outcome) {
	for i, m := range msgs {
		if a.msgs[i].State == store.Stored || ctx.Err() != nil {
			continue
		}
		st, err := o.cfg.Inbox.Leave(ctx, m)
		if err != nil {
			o.cfg.Logger.Debug("outbox: deposit failed", "peer", a.peer, "err", err)
			continue
		}
		outcomes[i] = outcome{replicas: st.Replicas, of: st.Of}
	}
}

// record persists state changes, then tells waiters and the event sink.
func (o *Outbox) record(updates []store.Update) {
	if len(updates) == 0 {
		return
	}
	if err := o.store.SetStates(updates); err != nil {
		// The messages stay in the store's outbox and go again after a
		// restart; the recipient deduplicates.
		o.cfg.Logger.Error("outbox: cannot record delivery states", "err", err)
		return
	}
	for _, u := range updates {
		o.mu.Lock()
		ws := o.waiters[string(u.ID)]
		delete(o.waiters, string(u.ID))
		o.mu.Unlock()
		for _, w := range ws {
			close(w)
		}
		o.cfg.OnState(u)
	}
}
