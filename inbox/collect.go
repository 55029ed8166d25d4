package inbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/internal/jitter"
	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/seal"
	"github.com/parley-p2p/parley/store"
)

// CollectorConfig says how a recipient collects its inbox.
type CollectorConfig struct {
	Client *Client
	Keys   *seal.Keyring
	Self   peer.ID
	Store  *store.Store
	// OnNew is told of the messages one collection persisted for the first
	// time, in order. It must not block.
	OnNew func([]*store.Message)
	// Accept, when set, says whether to keep messages from a sender; the
	// others are dropped (and deleted at the replicas all the same).
	Accept func(from peer.ID) bool
	// MinGap spaces collections asked for by Kick or Learn; default 5 s.
	MinGap time.Duration
	// Interval is the longest time between passes (default 15 min). A
	// pass also follows each lookup Learn is told of (see Learn), so with
	// presence republished every 10 minutes that is how often a node
	// collects: the interval is for when no republish comes.
	Interval time.Duration
	// LookupEvery is how often a pass also looks the replicas up in the
	// DHT (default 10 min); between lookups a pass asks only the replicas
	// remembered from the last one (or told of by Learn). The first pass
	// (unless Learn came first), a kicked pass and a pass whose remembered
	// replicas mostly do not answer always look up.
	LookupEvery time.Duration
	Now         func() time.Time
	Logger      *slog.Logger
	// CrashAfterPersist, when set, is called after fetched messages are
	// persisted and before they are deleted at the replicas: the crash
	// tests kill the process there.
	CrashAfterPersist func()
}

// Collector fetches what replicas hold for this node: on start, when
// kicked (a reconnect) and periodically. Fetched messages are persisted
// before they are deleted at the replicas, and deduplicated, so a crash
// between the two shows nothing twice.
type Collector struct {
	cfg  CollectorConfig
	kick chan struct{}
	mu   sync.Mutex // one collection at a time
	// lookedUp is when a lookup last found the replicas, in Unix
	// nanoseconds (zero: never in this run): the collector's own, or one
	// Learn was told of. relook asks the next pass to look up.
	lookedUp atomic.Int64
	relook   atomic.Bool
	// collecting is set during a pass; lastPass is when the last one
	// ended (Unix nanoseconds). learned asks the loop for a pass.
	collecting atomic.Bool
	lastPass   atomic.Int64
	learned    chan struct{}
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// NewCollector returns a collector; Start runs it.
func NewCollector(cfg CollectorConfig) *Collector {
	if cfg.Interval == 0 {
		cfg.Interval = 15 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnNew == nil {
		cfg.OnNew = func([]*store.Message) {}
	}
	if cfg.MinGap == 0 {
		cfg.MinGap = 5 * time.Second
	}
	if cfg.LookupEvery == 0 {
		cfg.LookupEvery = 10 * time.Minute
	}
	return &Collector{cfg: cfg, kick: make(chan struct{}, 1), learned: make(chan struct{}, 1)}
}

// Start collects now and then in the background.
func (c *Collector) Start(ctx context.Context) error {
	ctx, c.cancel = context.WithCancel(ctx)
	c.wg.Add(1)
	go c.loop(ctx)
	return nil
}

// Close stops collecting and waits.
func (c *Collector) Close() error {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
	return nil
}

// Kick asks for a collection soon, with a lookup: the node is back in touch
// after being cut off, and its replicas may have changed meanwhile.
func (c *Collector) Kick() {
	c.relook.Store(true)
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Collector) loop(ctx context.Context) {
	defer c.wg.Done()
	t := time.NewTimer(jitter.Spread(c.cfg.Interval))
	defer t.Stop()
	for {
		last := time.Now()
		if _, err := c.Collect(ctx); err != nil && ctx.Err() == nil {
			c.cfg.Logger.Debug("inbox: collect", "err", err)
		}
		// The interval counts from the last pass, whatever prompted it.
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(jitter.Spread(c.cfg.Interval))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.learned:
		case <-c.kick:
			// Many peers connecting at once must not become many lookups.
			if wait := c.cfg.MinGap - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
	}
}

// Learn takes the peers closest to this node's inbox key, found by a
// lookup made for another reason — storing the presence record, which
// lives under the same key — so that passes until LookupEvery has gone by
// ask those replicas without a lookup of their own. It also asks for a
// pass now, unless one is under way or ended less than MinGap ago (the
// pass's own lookup, or a republish just after one): the lookup has just
// connected to those replicas, so listing at them costs no handshake,
// while a pass at any other time mostly opens a new connection to each.
func (c *Collector) Learn(closest []peer.ID) {
	replicas := c.cfg.Client.pick(c.cfg.Self, closest)
	if len(replicas) == 0 {
		return
	}
	c.remember(replicas)
	c.lookedUp.Store(c.cfg.Now().UnixNano())
	if c.collecting.Load() || time.Since(time.Unix(0, c.lastPass.Load())) < c.cfg.MinGap {
		return
	}
	select {
	case c.learned <- struct{}{}:
	default:
	}
}

// Collect runs one pass: list at every replica, fetch what is new, open,
// persist, then delete everywhere. It returns how many new messages it
// persisted.
//
// A lookup costs a walk of the DHT (a dozen requests, often new
// connections); listing at the replicas remembered from the last lookup
// costs one request each. So a pass looks up only when one is due (see
// LookupEvery) or the remembered replicas fail it, and the replicas' own
// handoff keeps items near the inbox key as they change.
func (c *Collector) Collect(ctx context.Context) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.collecting.Store(true)
	defer func() {
		c.lastPass.Store(time.Now().UnixNano())
		c.collecting.Store(false)
	}()
	// Who holds what; the first answer usually carries the items too.
	holders := map[string][]peer.ID{}
	listed := map[peer.ID][][]byte{}
	data := map[string][]byte{}
	asked := map[peer.ID]bool{}
	answered := 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	list := func(r peer.ID) {
		mu.Lock()
		if asked[r] {
			mu.Unlock()
			return
		}
		asked[r] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			items, err := c.cfg.Client.List(ctx, r, maxListData)
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			answered++
			for _, it := range items {
				holders[string(it.Id)] = append(holders[string(it.Id)], r)
				listed[r] = append(listed[r], it.Id)
				if _, have := data[string(it.Id)]; !have && len(it.Data) > 0 && string(ItemID(it.Data)) == string(it.Id) {
					data[string(it.Id)] = it.Data
				}
			}
		}()
	}
	// Ask the replicas remembered from last time at once — a node coming
	// back need not wait for its lookup to learn who they are — and the
	// ones the lookup finds as they come.
	remembered := c.Remembered()
	for _, r := range remembered {
		list(r)
	}
	var lookupErr error
	last := c.lookedUp.Load()
	due := c.relook.Swap(false) || last == 0 || c.cfg.Now().Sub(time.Unix(0, last)) >= c.cfg.LookupEvery
	if !due {
		wg.Wait()
		mu.Lock()
		due = answered*2 <= len(remembered) // most are gone: find the new ones
		mu.Unlock()
	}
	if due {
		var replicas []peer.ID
		replicas, lookupErr = c.cfg.Client.Replicas(ctx, c.cfg.Self)
		for _, r := range replicas {
			list(r)
		}
		if lookupErr == nil {
			c.lookedUp.Store(c.cfg.Now().UnixNano())
			c.remember(replicas)
		}
	}
	wg.Wait()
	c.cfg.Logger.Debug("inbox: listed", "replicas", answered, "items", len(holders), "looked_up", due, "err", lookupErr)
	if len(holders) == 0 {
		return 0, lookupErr
	}
	missing := map[string][]peer.ID{}
	for id, hs := range holders {
		if _, have := data[id]; !have {
			missing[id] = hs
		}
	}
	for id, d := range c.fetch(ctx, missing) {
		data[id] = d
	}
	msgs := c.open(data)
	added, err := c.persist(msgs)
	if err != nil {
		return 0, err // nothing is deleted: the next pass tries again
	}
	if c.cfg.CrashAfterPersist != nil {
		c.cfg.CrashAfterPersist()
	}
	// Delete what was fetched, opened or not (an item that does not open
	// never will), at every replica that listed it, all at once.
	for r, ids := range listed {
		var gone [][]byte
		for _, id := range ids {
			if _, ok := data[string(id)]; ok {
				gone = append(gone, id)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for len(gone) > 0 {
				n := min(len(gone), MaxBatch)
				if err := c.cfg.Client.Delete(ctx, r, gone[:n]); err != nil {
					c.cfg.Logger.Debug("inbox: delete", "replica", r, "err", err)
					return
				}
				gone = gone[n:]
			}
		}()
	}
	wg.Wait()
	return added, nil
}

// fetch gets every listed item once, from the first holder that gives it.
func (c *Collector) fetch(ctx context.Context, holders map[string][]peer.ID) map[string][]byte {
	byReplica := map[peer.ID][][]byte{}
	for id, hs := range holders {
		byReplica[hs[0]] = append(byReplica[hs[0]], []byte(id))
	}
	out := map[string][]byte{}
	for r, ids := range byReplica {
		for len(ids) > 0 {
			n := min(len(ids), MaxBatch)
			items, err := c.cfg.Client.Fetch(ctx, r, ids[:n])
			if err != nil {
				// Try the other holders of these items one by one.
				for _, id := range ids[:n] {
					for _, other := range holders[string(id)][1:] {
						if got, err := c.cfg.Client.Fetch(ctx, other, [][]byte{id}); err == nil && len(got) == 1 {
							out[string(id)] = got[0].Data
							break
						}
					}
				}
			}
			for _, it := range items {
				if string(ItemID(it.Data)) == string(it.Id) { // a replica cannot swap contents
					out[string(it.Id)] = it.Data
				}
			}
			ids = ids[n:]
		}
	}
	return out
}

// open unboxes and authenticates fetched items, on every core (each item
// costs an X25519 operation); those that do not open are logged and dropped.
func (c *Collector) open(data map[string][]byte) []*pb.Message {
	work := make(chan []byte)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var msgs []*pb.Message
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				env, err := c.cfg.Keys.Unbox(d)
				var m *pb.Message
				if err == nil {
					m, err = c.cfg.Keys.Open(env)
				}
				if err != nil {
					c.cfg.Logger.Warn("inbox: dropping an item that does not open", "err", err)
					continue
				}
				if c.cfg.Accept == nil || c.cfg.Accept(peer.ID(m.From)) {
					mu.Lock()
					msgs = append(msgs, m)
					mu.Unlock()
				}
			}
		}()
	}
	for _, d := range data {
		work <- d
	}
	close(work)
	wg.Wait()
	// Restore each sender's order.
	sort.Slice(msgs, func(i, j int) bool {
		a, b := msgs[i], msgs[j]
		if string(a.From) != string(b.From) {
			return string(a.From) < string(b.From)
		}
		if a.Seq != b.Seq {
			return a.Seq < b.Seq
		}
		return a.SentAt < b.SentAt
	})
	return msgs
}

func (c *Collector) persist(msgs []*pb.Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	now := c.cfg.Now()
	rows := make([]*store.Message, len(msgs))
	for i, m := range msgs {
		rows[i] = &store.Message{
			ID: m.Id, Peer: peer.ID(m.From), SentAt: time.UnixMilli(m.SentAt), At: now,
			Kind: int32(m.Kind), Body: m.Body, State: store.Received,
		}
	}
	added, err := c.cfg.Store.Receive(rows)
	if err != nil {
		return 0, errors.Join(errors.New("inbox: persist fetched messages"), err)
	}
	var fresh []*store.Message
	for i, ok := range added {
		if ok {
			fresh = append(fresh, rows[i])
		}
	}
	if len(fresh) > 0 {
		c.cfg.OnNew(fresh)
	}
	return len(fresh), nil
}

// settingReplicas remembers this node's replicas (and how to reach them)
// across restarts.
const settingReplicas = "inbox/replicas"

type rememberedReplica struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

// Remembered are the replicas the next pass asks first: those the last
// lookup of this node's key found.
func (c *Collector) Remembered() []peer.ID {
	var saved []rememberedReplica
	if ok, err := c.cfg.Store.Setting(settingReplicas, &saved); err != nil || !ok {
		return nil
	}
	var out []peer.ID
	for _, r := range saved {
		p, err := peer.Decode(r.ID)
		if err != nil {
			continue
		}
		c.cfg.Client.learnAddrs(p, r.Addrs)
		out = append(out, p)
	}
	return out
}

func (c *Collector) remember(replicas []peer.ID) {
	saved := make([]rememberedReplica, 0, len(replicas))
	for _, p := range replicas {
		saved = append(saved, rememberedReplica{ID: p.String(), Addrs: c.cfg.Client.addrs(p)})
	}
	var old []rememberedReplica
	c.cfg.Store.Setting(settingReplicas, &old)
	if fmt.Sprint(old) == fmt.Sprint(saved) {
		return // nothing new: spare the disk a write
	}
	if err := c.cfg.Store.PutSetting(settingReplicas, saved); err != nil {
		c.cfg.Logger.Debug("inbox: remember replicas", "err", err)
	}
}
