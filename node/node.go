// Package node is the composition root of a Parley node: it builds the
// libp2p host, the private DHT, the store and the services, starts them in
// order and stops them in reverse. It holds no protocol logic of its own.
package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	routedhost "github.com/libp2p/go-libp2p/p2p/host/routed"
	yamux "github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/dht"
	"github.com/parley-p2p/parley/direct"
	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/inbox"
	"github.com/parley-p2p/parley/outbox"
	"github.com/parley-p2p/parley/presence"
	"github.com/parley-p2p/parley/seal"
	"github.com/parley-p2p/parley/store"
)

// DefaultRepublish is how often a node stores its presence record again,
// unless Config.Presence says otherwise.
const DefaultRepublish = presence.DefaultRepublish

// DefaultLifetime is how long a node's presence record is valid, unless
// Config.Presence says otherwise.
const DefaultLifetime = presence.DefaultLifetime

// checkedRecords is how many good presence record signatures a node
// remembers (presence.Checked): more than a DHT server holds (Neighbourhood
// records for each server's worth of users, about 40 with one server in
// five) plus a user's contacts, for about 30 KB.
const checkedRecords = 256

// DBFile is the node's database inside its home.
const DBFile = "parley.db"

// DefaultListen listens on every interface, TCP and QUIC, on ports the
// system picks.
var DefaultListen = []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"}

// Config says how to build a node.
type Config struct {
	// Home holds the key, the database and the API files.
	Home string
	// Identity overrides the key in Home (tests and simulations).
	Identity *identity.Identity
	// Listen are multiaddrs to listen on; empty means DefaultListen.
	Listen []string
	// Bootstrap are multiaddrs (with /p2p/ID) of peers to join through.
	Bootstrap []string
	// DHTMode is server (the default), client or auto.
	DHTMode string
	// DHTRefresh is how often the DHT routing table is refreshed; 0 means
	// every 10 minutes for a server and never for a client (a client's
	// table serves only its own lookups, which keep it fresh, and the
	// refresh lookups would be most of a quiet client's traffic); a
	// negative value means never.
	DHTRefresh time.Duration
	// Host, when set, is used instead of building one; its key must be the
	// identity's. The node does not close an injected host.
	Host host.Host
	// ConnLow and ConnHigh are the connection manager's watermarks.
	ConnLow, ConnHigh int
	// NoSync commits the database without flushing it to disk: nothing is
	// lost when the process stops or crashes, but what the last moments
	// wrote may be when the machine does (store.Options). For simulations
	// and throwaway test nodes, never for a user's node.
	NoSync bool
	// SendWait is how long Send waits for delivery before answering with
	// the message still queued; default 5 s.
	SendWait time.Duration
	// Outbox tunes retries.
	Outbox outbox.Config
	// Presence tunes record lifetimes and subscriptions; its Identity,
	// Host, DHT, Store, SendKey and OnChange are set by the node.
	Presence presence.Config
	// Inbox tunes store-and-forward.
	Inbox  InboxConfig
	Logger *slog.Logger
}

// InboxConfig tunes store-and-forward. Zero values take the defaults.
type InboxConfig struct {
	Replicas int           // r: replicas per recipient; default 5
	Quorum   int           // w: replicas that must hold a message; default 3
	TTL      time.Duration // how long replicas keep a message; default 7 days
	Limits   inbox.Limits  // what this node holds for others
	// Collect is the longest time between two fetches of the node's own
	// inbox; default one and a half republish intervals. The node also
	// fetches after each presence republish, over the connections the
	// republish's lookup made to its replicas.
	Collect time.Duration
	// Sweep is how often the replica expires items and hands them to
	// newcomers; default 5 min.
	Sweep time.Duration
	// NoReadReceipts stops telling senders when their messages were read.
	NoReadReceipts bool
	// CrashAfterPersist is a crash test's hook (see inbox.CollectorConfig).
	CrashAfterPersist func()
}

// Node is one running Parley node.
type Node struct {
	cfg       Config
	id        *identity.Identity
	bootstrap []peer.AddrInfo
	log       *slog.Logger
	events    *api.Hub

	host     host.Host
	ownHost  bool
	dht      *dht.DHT
	refresh  time.Duration // the DHT routing table's refresh period; negative: never
	store    *store.Store
	direct   *direct.Service
	outbox   *outbox.Outbox
	presence *presence.Service
	replica  *inbox.Replica
	collect  *inbox.Collector
	inboxes  *inbox.Client
	gater    gater
	cancel   context.CancelFunc

	notifiee network.Notifiee
	idents   event.Subscription // peers identified on new connections
	wg       sync.WaitGroup
}

// New checks cfg and loads the identity; it starts nothing.
func New(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Home == "" {
		return nil, errors.New("node: no home directory")
	}
	if cfg.SendWait == 0 {
		cfg.SendWait = 5 * time.Second
	}
	if cfg.ConnLow == 0 {
		cfg.ConnLow, cfg.ConnHigh = 64, 192
	}
	if _, err := dht.ParseMode(cfg.DHTMode); err != nil {
		return nil, err
	}
	for _, s := range cfg.Listen {
		if _, err := ma.NewMultiaddr(s); err != nil {
			return nil, fmt.Errorf("node: listen address %q: %v", s, err)
		}
	}
	boot, err := ParseBootstrap(cfg.Bootstrap)
	if err != nil {
		return nil, err
	}
	id := cfg.Identity
	if id == nil {
		if id, err = identity.Load(cfg.Home); err != nil {
			return nil, err
		}
	}
	if cfg.Host != nil && cfg.Host.ID() != id.ID() {
		return nil, fmt.Errorf("node: injected host is %s, identity is %s", cfg.Host.ID(), id.ID())
	}
	return &Node{cfg: cfg, id: id, bootstrap: boot, log: cfg.Logger, events: api.NewHub()}, nil
}

// ParseBootstrap parses multiaddrs that must name their peer (/p2p/ID).
func ParseBootstrap(addrs []string) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("node: bootstrap address %q: %v", s, err)
		}
		ai, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			return nil, fmt.Errorf("node: bootstrap address %q must end in /p2p/<peer-id>: %v", s, err)
		}
		out = append(out, *ai)
	}
	return out, nil
}

// Start opens the store (which locks the home against a second daemon),
// builds the host and the DHT, and starts the services.
func (n *Node) Start(ctx context.Context) (err error) {
	ctx, n.cancel = context.WithCancel(ctx)
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if err := os.MkdirAll(n.cfg.Home, 0o700); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	dbPath := filepath.Join(n.cfg.Home, DBFile)
	if n.store, err = store.Open(dbPath, store.Options{NoSync: n.cfg.NoSync}); err != nil {
		if errors.Is(err, store.ErrLocked) {
			return fmt.Errorf("another parley daemon is already running with home %s; stop it first or use another --home", n.cfg.Home)
		}
		return err
	}
	if n.host = n.cfg.Host; n.host == nil {
		if n.host, err = n.buildHost(); err != nil {
			return err
		}
		n.ownHost = true
	}
	mode, _ := dht.ParseMode(n.cfg.DHTMode)
	n.refresh = n.cfg.DHTRefresh
	if n.refresh == 0 && mode == dht.Client {
		n.refresh = -1
	}
	// The lookup that stores the presence record finds the inbox replicas
	// too (one key per user): the collector need not look them up itself.
	ownKey := inbox.Key(n.id.ID())
	var collector atomic.Pointer[inbox.Collector] // set once built, below
	onClosest := func(key string, closest []peer.ID) {
		if c := collector.Load(); key == ownKey && c != nil {
			c.Learn(closest)
		}
	}
	// One memory of good record signatures, for the DHT's validator and
	// the presence service: both check the same records.
	checked := presence.NewChecked(checkedRecords)
	if n.dht, err = dht.New(n.host, dht.Config{Mode: mode, Bootstrap: n.bootstrap, Refresh: n.refresh, OnClosest: onClosest, Checked: checked}); err != nil {
		return err
	}
	// Streams to a peer whose address we do not know go through a DHT
	// lookup first.
	routed := routedhost.Wrap(n.host, n.dht)
	keys := seal.NewKeyring(n.id)
	n.direct = direct.New(routed, keys, n.store, n.onReceived, n.log)
	n.direct.Refuse(func(p peer.ID) bool { return n.gater.check(&n.gater.refuses, p) })
	ic := n.cfg.Inbox
	if ic.Replicas == 0 {
		ic.Replicas = 5
	}
	closest := n.dht.Closest
	if n.replica, err = inbox.NewReplica(inbox.ReplicaConfig{
		Host: n.host, Key: n.id.PrivKey(), Store: n.store, Closest: closest, Nearest: n.dht.Nearest,
		Limits: ic.Limits, R: ic.Replicas, Sweep: ic.Sweep, Logger: n.log,
	}); err != nil {
		return err
	}
	// Replicas come from a DHT lookup, with their addresses: one that cannot
	// be dialled is gone, and looking it up again would only walk the DHT.
	client := inbox.NewClient(n.host, closest, ic.Replicas)
	n.inboxes = client
	republish := n.cfg.Presence.Republish
	if republish == 0 {
		republish = presence.DefaultRepublish
	}
	n.collect = inbox.NewCollector(inbox.CollectorConfig{
		Client: client, Keys: keys, Self: n.id.ID(), Store: n.store, OnNew: n.onCollected,
		Interval: cmp.Or(ic.Collect, republish*3/2), Logger: n.log, CrashAfterPersist: ic.CrashAfterPersist,
		// Every presence republish finds the replicas (Learn): a lookup
		// of the collector's own only when one is half again overdue.
		LookupEvery: republish * 3 / 2,
		Accept:      func(from peer.ID) bool { return !n.presence.Blocked(from) }, // a blocked peer gets nothing through
	})
	collector.Store(n.collect)
	ocfg := n.cfg.Outbox
	ocfg.Logger = n.log
	ocfg.OnState = n.onState
	ocfg.Inbox = inbox.NewSender(client, keys, ic.TTL)
	ocfg.Quorum = ic.Quorum
	ocfg.Online = func(p peer.ID) bool { return n.host.Network().Connectedness(p) == network.Connected }
	n.outbox = outbox.New(n.id.ID(), n.store, n.direct, ocfg)
	pcfg := n.cfg.Presence
	pcfg.Identity, pcfg.Host, pcfg.Store, pcfg.Logger = n.id, n.host, n.store, n.log
	pcfg.DHT = n.dht
	pcfg.SendKey = n.sendPresenceKey
	pcfg.OnChange = n.onPresence
	pcfg.Checked = checked
	if n.presence, err = presence.New(pcfg); err != nil {
		return err
	}
	refuses, blocks := n.presence.Refuses, n.presence.Blocked
	n.gater.refuses.Store(&refuses)
	n.gater.blocks.Store(&blocks)
	if err := n.direct.Start(ctx); err != nil {
		return err
	}
	if err := n.replica.Start(ctx); err != nil {
		return err
	}
	if err := n.outbox.Start(ctx); err != nil {
		return err
	}
	// A peer that identifies itself on a new connection is online: deliver
	// what waits for it now rather than when its backoff runs out, and
	// watch its presence. Identified, not merely connected: a peer that
	// refuses us (it denied us) lets our side of the handshake finish
	// before it closes, and acting on that connection would dial again,
	// and again.
	idents, err := n.host.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted), eventbus.BufSize(64))
	if err != nil {
		return err
	}
	n.idents = idents
	n.wg.Go(func() { n.onIdentified(idents.Out()) })
	n.notifiee = &network.NotifyBundle{
		// Without a connection a subscription pushes nothing: stop
		// trusting it, so the next look goes to the DHT.
		DisconnectedF: func(net network.Network, c network.Conn) {
			if net.Connectedness(c.RemotePeer()) != network.Connected {
				n.presence.Unwatch(c.RemotePeer())
			}
		},
	}
	n.host.Network().Notify(n.notifiee)
	if err := n.joinSwarm(ctx); err != nil {
		return err
	}
	// Publish and collect only once in the swarm, so the first record
	// reaches peers and the replicas can be found.
	if err := n.presence.Start(ctx); err != nil {
		return err
	}
	return n.collect.Start(ctx)
}

// onIdentified acts on each peer that identified itself on a new
// connection, until the subscription closes.
func (n *Node) onIdentified(events <-chan any) {
	for e := range events {
		p := e.(event.EvtPeerIdentificationCompleted).Peer
		n.outbox.Wake(p)
		n.presence.Kick(p)
		// Back in touch after being cut off from everyone: something may
		// wait for us. (Not on every connection: a node makes new ones all
		// the time, and each collection walks the DHT.)
		if len(n.host.Network().Peers()) <= 1 {
			n.collect.Kick()
			n.presence.Republish() // its record's holders may have changed too
		}
	}
}

// joinSwarm connects to the bootstrap peers; at least one must answer.
func (n *Node) joinSwarm(ctx context.Context) error {
	if len(n.bootstrap) == 0 {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var errs []error
	for _, ai := range n.bootstrap {
		if err := n.host.Connect(cctx, ai); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ai.ID, err))
		}
	}
	if len(errs) == len(n.bootstrap) {
		return fmt.Errorf("node: no bootstrap peer answered; check the --bootstrap addresses and that those peers are running: %w", errors.Join(errs...))
	}
	for _, err := range errs {
		n.log.Warn("node: bootstrap peer did not answer", "err", err)
	}
	// A server fills its routing table now instead of at the first refresh
	// (and so becomes known to the peers it asks). A client that does not
	// refresh skips it: a dozen lookups of random keys only to fill a table
	// that its own first lookups fill on the way. Either waits (briefly)
	// until the table holds someone: lookups made right after Start —
	// publishing presence, collecting the inbox — need it.
	if n.refresh >= 0 {
		if err := n.dht.Bootstrap(ctx); err != nil {
			return err
		}
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for n.dht.RoutingTable().Size() == 0 {
		select {
		case <-cctx.Done():
			n.log.Warn("node: routing table still empty after joining")
			return nil
		case <-tick.C:
		}
	}
	return nil
}

func (n *Node) buildHost() (host.Host, error) {
	listen := n.cfg.Listen
	if len(listen) == 0 {
		listen = DefaultListen
	}
	cm, err := connmgr.NewConnManager(n.cfg.ConnLow, n.cfg.ConnHigh, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return nil, fmt.Errorf("node: connection manager: %w", err)
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(Limits()))
	if err != nil {
		return nil, fmt.Errorf("node: resource manager: %w", err)
	}
	h, err := libp2p.New(
		libp2p.Identity(n.id.PrivKey()),
		libp2p.ListenAddrStrings(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ConnectionManager(cm),
		libp2p.ConnectionGater(&n.gater),
		libp2p.ResourceManager(rm),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
	)
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("node: cannot listen on %v: %w", listen, err)
	}
	return h, nil
}

// Limits are the resource manager's limits: libp2p's defaults scaled to the
// machine, plus explicit bounds for Parley's own protocols so that one peer
// cannot take all streams or memory.
func Limits() rcmgr.ConcreteLimitConfig {
	cfg := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&cfg)
	cfg.AddProtocolLimit(direct.ID,
		rcmgr.BaseLimit{Streams: 512, StreamsInbound: 256, StreamsOutbound: 256, Memory: 64 << 20},
		rcmgr.BaseLimitIncrease{Streams: 256, StreamsInbound: 128, StreamsOutbound: 128, Memory: 32 << 20})
	cfg.AddProtocolPeerLimit(direct.ID,
		rcmgr.BaseLimit{Streams: 8, StreamsInbound: 4, StreamsOutbound: 4, Memory: 4 << 20},
		rcmgr.BaseLimitIncrease{})
	cfg.AddProtocolLimit(inbox.ProtocolID,
		rcmgr.BaseLimit{Streams: 256, StreamsInbound: 128, StreamsOutbound: 128, Memory: 64 << 20},
		rcmgr.BaseLimitIncrease{Streams: 128, StreamsInbound: 64, StreamsOutbound: 64, Memory: 32 << 20})
	cfg.AddProtocolPeerLimit(inbox.ProtocolID,
		rcmgr.BaseLimit{Streams: 8, StreamsInbound: 4, StreamsOutbound: 4, Memory: 8 << 20},
		rcmgr.BaseLimitIncrease{})
	cfg.AddProtocolLimit(presence.ProtocolID,
		rcmgr.BaseLimit{Streams: 256, StreamsInbound: 128, StreamsOutbound: 128, Memory: 16 << 20},
		rcmgr.BaseLimitIncrease{Streams: 128, StreamsInbound: 64, StreamsOutbound: 64, Memory: 8 << 20})
	cfg.AddProtocolPeerLimit(presence.ProtocolID,
		rcmgr.BaseLimit{Streams: 4, StreamsInbound: 2, StreamsOutbound: 2, Memory: 1 << 20},
		rcmgr.BaseLimitIncrease{})
	return cfg.AutoScale()
}

// Close stops the services in reverse order and waits for their goroutines.
func (n *Node) Close() error {
	if n.cancel != nil {
		n.cancel()
	}
	var errs []error
	if n.presence != nil {
		// First, while the host and DHT still run: publish offline.
		errs = append(errs, n.presence.Close())
	}
	if n.notifiee != nil {
		n.host.Network().StopNotify(n.notifiee)
		n.notifiee = nil
	}
	if n.idents != nil {
		n.idents.Close()
		n.wg.Wait()
		n.idents = nil
	}
	if n.collect != nil {
		errs = append(errs, n.collect.Close())
	}
	if n.outbox != nil {
		errs = append(errs, n.outbox.Close())
	}
	if n.replica != nil {
		errs = append(errs, n.replica.Close())
	}
	if n.direct != nil {
		errs = append(errs, n.direct.Close())
	}
	if n.dht != nil {
		errs = append(errs, n.dht.Close())
	}
	if n.host != nil && n.ownHost {
		errs = append(errs, n.host.Close())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	n.presence, n.collect, n.outbox, n.replica, n.direct, n.dht, n.host, n.store = nil, nil, nil, nil, nil, nil, nil, nil
	return errors.Join(errs...)
}

// ID is the node's peer ID.
func (n *Node) ID() peer.ID { return n.id.ID() }

// Host is the node's libp2p host.
func (n *Node) Host() host.Host { return n.host }

// DHTStats counts the node's DHT work since it started (see dht.Stats).
func (n *Node) DHTStats() dht.Stats { return n.dht.Stats() }

// Addrs are the node's listen addresses, each ending in /p2p/ID.
func (n *Node) Addrs() []ma.Multiaddr {
	ai := peer.AddrInfo{ID: n.id.ID(), Addrs: n.host.Addrs()}
	out, _ := peer.AddrInfoToP2pAddrs(&ai)
	return out
}

func dhtModeName(m kaddht.ModeOpt) string {
	switch m {
	case kaddht.ModeServer:
		return "server"
	case kaddht.ModeClient:
		return "client"
	}
	return "auto"
}
