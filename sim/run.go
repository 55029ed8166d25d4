package sim

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/node"
)

// Options are how to run a plan (not what: that is the plan).
type Options struct {
	Dir      string        // where the nodes' homes go; default a temporary directory
	Progress io.Writer     // a progress line per sample; nil for none
	Sample   time.Duration // simulated time between samples; default 1 min
	// AtEnd, when set, is called after the last sample, while the nodes are
	// still up (to take a heap profile, say).
	AtEnd func()
}

// world is one run: the simulated network and the nodes on it.
type world struct {
	plan *Plan
	opt  Options
	ctx  context.Context
	nw   *internet
	ids  []*identity.Identity
	// pairs[i] are the planned contact pairs node i makes as it joins: those
	// whose other end joined before it.
	pairs [][][2]int
	boot  string

	mu      sync.Mutex
	nodes   []*node.Node // nil while a node is down
	bw      []*metrics.BandwidthCounter
	nextIP  int
	watches sync.WaitGroup
	// onShown, when set, is told of each message shown at a node.
	onShown func(node int, text string)

	rec *recorder
}

// Run executes the plan and returns what it measured. It must run inside a
// synctest bubble (the simulated network keeps virtual time).
func Run(ctx context.Context, plan *Plan, opt Options) (*Result, error) {
	if opt.Sample == 0 {
		opt.Sample = time.Minute
	}
	if opt.Dir == "" {
		dir, err := os.MkdirTemp("", "parley-sim-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		opt.Dir = dir
	}
	wallStart, joinStart := wallNow(), time.Now()
	w, stop, err := newWorld(ctx, plan, opt)
	if err != nil {
		return nil, err
	}
	defer stop()
	joined, joinWall := time.Since(joinStart), wallNow()-wallStart
	simStart := time.Now()
	w.rec.startedAt = simStart
	simulated := w.play(simStart)
	// First: the nodes still up add their traffic and DHT work. The world
	// ends here, so they leave without a goodbye (see end).
	endStart := wallNow()
	w.end()
	stop()
	result := w.rec.result(plan, simulated)
	result.Wall = wallNow() - wallStart
	result.Join, result.JoinWall, result.EndWall = joined, joinWall, wallNow()-endStart
	return result, nil
}

// newWorld starts the plan's nodes on a new simulated network and makes
// their contacts; stop ends it all (and may be called more than once).
func newWorld(ctx context.Context, plan *Plan, opt Options) (*world, func(), error) {
	sc := plan.Scenario
	w := &world{
		plan: plan, opt: opt, ctx: ctx,
		nodes: make([]*node.Node, sc.Nodes), bw: make([]*metrics.BandwidthCounter, sc.Nodes),
		rec: newRecorder(sc.Nodes),
	}
	w.nw = newInternet(sc.Tick)
	stop := func() {
		w.stopAll()
		w.watches.Wait()
	}
	for i := range sc.Nodes {
		w.ids = append(w.ids, identityFor(sc.Seed, i))
	}
	// Each joins, then befriends its contacts among those up (the later
	// ones befriend it when they join), then the next joins after a pause.
	w.pairs = make([][][2]int, sc.Nodes)
	for a, cs := range plan.Contacts {
		for _, b := range cs {
			w.pairs[max(a, b)] = append(w.pairs[max(a, b)], [2]int{a, b})
		}
	}
	gap := sc.JoinOver / time.Duration(sc.Nodes)
	// Sampled as it goes; those samples end up at negative times (before
	// the workload's clock starts) and count in no peak.
	joinStart, nextSample := time.Now(), time.Duration(0)
	for i := range sc.Nodes {
		if at := time.Since(joinStart); at >= nextSample {
			w.rec.sample(at, w)
			nextSample += opt.Sample
			if opt.Progress != nil {
				fmt.Fprintf(opt.Progress, "\rjoining: %d of %d nodes up   ", i, sc.Nodes)
			}
		}
		if err := w.start(i); err != nil {
			stop()
			return nil, nil, err
		}
		if err := w.befriend(i); err != nil {
			stop()
			return nil, nil, err
		}
		time.Sleep(gap)
	}
	// Put the join's samples before the workload's clock: at negative times.
	w.rec.shiftSamples(-time.Since(joinStart))
	return w, stop, nil
}

// identityFor derives node i's key from the seed: the same seed, the same
// peer IDs, and so the same DHT neighbourhoods.
func identityFor(seed uint64, i int) *identity.Identity {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], seed)
	binary.BigEndian.PutUint64(b[8:], uint64(i))
	s := sha256.Sum256(b[:])
	priv, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(s[:]))
	if err != nil {
		panic(err)
	}
	id, err := identity.FromKey(priv)
	if err != nil {
		panic(err)
	}
	return id
}

// recordLifetime is how long a presence record lives when it is
// republished every republish: as much longer as by default. (The ratio is
// taken in floating point: the product of two durations overflows.)
func recordLifetime(republish time.Duration) time.Duration {
	return time.Duration(float64(republish) * float64(node.DefaultLifetime) / float64(node.DefaultRepublish))
}

// oneWay is node i's one-way latency to the core: half its class's round
// trip.
func (w *world) oneWay(i int) time.Duration {
	if w.plan.Client[i] {
		return w.plan.Scenario.ClientLatency / 2
	}
	return w.plan.Scenario.ServerLatency / 2
}

// address is the n-th simulated address: a public IPv4 address in 1.0.0.0/8.
func address(n int) net.IP {
	return net.IPv4(1, byte(n>>16), byte(n>>8), byte(n))
}

// start runs node i (again) on a fresh address, with its home kept.
func (w *world) start(i int) error {
	sc := w.plan.Scenario
	w.mu.Lock()
	w.nextIP++
	ip := address(w.nextIP)
	w.mu.Unlock()
	bwidth := sc.ServerBandwidth
	if w.plan.Client[i] {
		bwidth = sc.ClientBandwidth
	}
	cm, err := connmgr.NewConnManager(sc.ConnLow, sc.ConnHigh, connmgr.WithGracePeriod(30*time.Second))
	if err != nil {
		return err
	}
	bw := metrics.NewBandwidthCounter()
	h, err := libp2p.New(
		libp2p.Identity(w.ids[i].PrivKey()),
		libp2p.ListenAddrStrings(fmt.Sprintf("/ip4/%s/udp/8000/quic-v1", ip)),
		libp2p.Transport(libp2pquic.NewTransport),
		w.nw.quicTransport(w.oneWay(i), bwidth, len(w.plan.Side) > i && w.plan.Side[i]),
		libp2p.DisableIdentifyAddressDiscovery(),
		libp2p.ResourceManager(&network.NullResourceManager{}),
		libp2p.ConnectionManager(cm),
		libp2p.BandwidthReporter(bw),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
		// Every simulated address is reachable (the classes differ in DHT
		// mode and links, not in NAT): no AutoNAT probing.
		libp2p.ForceReachabilityPublic(),
	)
	if err != nil {
		return fmt.Errorf("sim: host %d: %w", i, err)
	}
	cfg := node.Config{
		Home: filepath.Join(w.opt.Dir, fmt.Sprint("n", i)), Identity: w.ids[i], Host: h,
		DHTMode: "server", Logger: slog.New(slog.DiscardHandler),
		// A node's crash here is its stop: the page cache outlives it.
		NoSync: true,
	}
	cfg.Presence.Republish, cfg.Presence.Lifetime = sc.Republish, recordLifetime(sc.Republish)
	if w.plan.Client[i] {
		cfg.DHTMode = "client"
	}
	if i > 0 {
		cfg.Bootstrap = []string{w.boot}
	}
	n, err := node.New(cfg)
	if err != nil {
		h.Close()
		return fmt.Errorf("sim: node %d: %w", i, err)
	}
	// Listen before starting: a returning node collects its inbox at once.
	events, cancel := n.Subscribe()
	if err := n.Start(w.ctx); err != nil {
		cancel()
		h.Close()
		return fmt.Errorf("sim: node %d: %w", i, err)
	}
	if i == 0 && w.boot == "" {
		w.boot = n.Addrs()[0].String()
	}
	// Count the connections the node opens or accepts: each costs a
	// handshake, and they are much of a node's CPU.
	h.Network().Notify(&network.NotifyBundle{ConnectedF: func(network.Network, network.Conn) { w.rec.connected() }})
	w.mu.Lock()
	w.nodes[i], w.bw[i] = n, bw
	w.mu.Unlock()
	w.rec.setCancel(i, cancel)
	w.watches.Add(1)
	go func() {
		defer w.watches.Done()
		for e := range events {
			w.rec.event(i, e, time.Now())
			w.mu.Lock()
			f := w.onShown
			w.mu.Unlock()
			if f != nil && e.Type == "message" && e.Message != nil {
				f(i, e.Message.Text)
			}
		}
	}()
	return nil
}

func (w *world) stop(i int) { w.stopNode(i, true) }

// stopNode stops node i and records its work. With goodbye, as a user
// quitting does: it publishes an offline record to its watchers and the
// DHT, over its host, which closes after it. Without, the host closes
// first, and a node with no peers has nobody to tell.
func (w *world) stopNode(i int, goodbye bool) {
	w.mu.Lock()
	n := w.nodes[i]
	w.nodes[i] = nil
	bw := w.bw[i]
	w.mu.Unlock()
	if n == nil {
		return
	}
	host := n.Host()
	st := n.DHTStats()
	if !goodbye {
		host.Close() // first, so that the node finds nobody to tell
	}
	n.Close()
	host.Close() // a second Close does nothing
	w.rec.stopped(i, bw, st)
	w.rec.cancel(i)
}

// stopAll stops every node still up, many at once: each says goodbye (an
// offline record to its watchers and the DHT), and one after another that
// would take a large swarm longer than the run.
func (w *world) stopAll() { w.stopEvery(true) }

// end ends the simulated world once the run is over: the network drops
// every datagram, and the nodes stop without a goodbye. Nobody is left to
// see one, and every node's goodbye at once (a lookup and eight stores
// each, against peers that are leaving too) would add its work to the
// run's counts and its time to the run's wall time.
func (w *world) end() {
	w.nw.down.Store(true)
	w.stopEvery(false)
}

func (w *world) stopEvery(goodbye bool) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range w.nodes {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			w.stopNode(i, goodbye)
		})
	}
	wg.Wait()
}

// befriend makes node i's planned contacts with the nodes before it mutual
// (each pair once, made by the later of the two to join).
func (w *world) befriend(i int) error {
	for _, pair := range w.pairs[i] {
		for _, xy := range [][2]int{pair, {pair[1], pair[0]}} {
			x, y := xy[0], xy[1]
			// As users do: each shows the other its 'parley id' (its
			// addresses with its peer ID), so the first message needs no
			// DHT lookup (which cannot find a DHT client at all).
			var card []string
			for _, a := range w.nodes[y].Addrs() {
				card = append(card, a.String())
			}
			if _, err := w.nodes[x].AddContact(w.ctx, api.Contact{Name: fmt.Sprint("n", y), ID: w.ids[y].ID().String(), Addrs: card}); err != nil {
				return fmt.Errorf("sim: contacts: %w", err)
			}
		}
	}
	return nil
}

func (w *world) up(i int) *node.Node {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nodes[i]
}

// play runs the events in simulated time and samples as it goes, and
// returns how long that took in simulated time.
func (w *world) play(start time.Time) time.Duration {
	var wg sync.WaitGroup
	next := time.Duration(0)
	sample := func() {
		w.rec.sample(time.Since(start), w)
		if w.opt.Progress != nil {
			fmt.Fprintf(w.opt.Progress, "\r%s", w.rec.progress(time.Since(start), w.plan.End()))
		}
	}
	waitUntil := func(at time.Duration) {
		for {
			d := at - time.Since(start)
			if d <= 0 {
				return
			}
			if ns := next - time.Since(start); ns <= d {
				time.Sleep(max(ns, 0))
				sample()
				next += w.opt.Sample
				continue
			}
			time.Sleep(d)
		}
	}
	for idx, e := range w.plan.Events {
		waitUntil(e.At)
		switch e.Kind {
		case Send:
			n := w.up(e.Node)
			if n == nil {
				continue // the sender is away: nothing to send
			}
			w.rec.sent(e.Text, e.Node, e.To, time.Now())
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.Send(w.ctx, api.SendRequest{To: w.ids[e.To].ID().String(), Text: e.Text})
			}()
		case Status:
			if n := w.up(e.Node); n != nil {
				note := fmt.Sprint("s", idx)
				w.rec.statusSet(e.Node, note, time.Now())
				n.SetStatus(w.ctx, api.StatusRequest{Status: e.Text, Note: note})
				// A contact looks the node up, as a person opening its profile would.
				if c := w.plan.Contacts[e.Node]; len(c) > 0 {
					if looker := w.up(c[idx%len(c)]); looker != nil {
						wg.Add(1)
						go func() {
							defer wg.Done()
							t0 := time.Now()
							p, err := looker.LookupPresence(w.ctx, w.ids[e.Node].ID())
							ok := err == nil && p.Status != "offline"
							if !ok && w.up(e.Node) == nil {
								// It left while being looked up: "offline"
								// is then as right as the status just set.
								w.rec.note(fmt.Sprintf("presence of node %d, just set to %s, not counted: it left while node %d looked it up", e.Node, e.Text, c[idx%len(c)]))
								return
							}
							w.rec.resolved(ok, time.Since(t0))
							if !ok {
								why := fmt.Sprint(err)
								if err == nil {
									why = fmt.Sprintf("read %s (seq %d, via %s)", p.Status, p.Seq, p.Source)
								}
								w.rec.note(fmt.Sprintf("presence of node %d, just set to %s, not resolved by node %d: %s", e.Node, e.Text, c[idx%len(c)], why))
							}
						}()
					}
				}
			}
		case Leave:
			w.stop(e.Node)
		case Rejoin:
			if err := w.start(e.Node); err != nil {
				w.rec.note(fmt.Sprintf("rejoin of node %d failed: %v", e.Node, err))
			}
		case Cut:
			w.nw.cut.Store(true)
		case Heal:
			w.nw.cut.Store(false)
		}
	}
	waitUntil(w.plan.End())
	sample()
	if w.opt.AtEnd != nil {
		w.opt.AtEnd()
	}
	wg.Wait()
	if w.opt.Progress != nil {
		fmt.Fprintln(w.opt.Progress)
	}
	return time.Since(start)
}

// Prepare must be called once, outside any synctest bubble, before Run:
// libp2p's bandwidth counters share one background goroutine that lives for
// the whole process, and it must not be born inside a bubble (a bubble ends
// only when all its goroutines do).
func Prepare() {
	prepareOnce.Do(func() {
		c := metrics.NewBandwidthCounter()
		c.LogSentMessage(1)
		c.GetBandwidthTotals()
	})
}

var prepareOnce sync.Once
