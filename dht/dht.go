// Package dht builds Parley's private Kademlia DHT: kad-dht under the
// /parley protocol prefix (so it never mixes with the public IPFS DHT),
// Parley's record validators (only the presence namespace is accepted), the
// bootstrap peers a node was given, Parley's own walk to a key's
// neighbourhood (for storing and reading records, finding inbox replicas
// and refreshing the routing table), and a put that counts who stored a
// record.
package dht

import (
	"context"
	"fmt"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	kadpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p-kad-dht/records"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/presence"
)

// Prefix is the protocol prefix: the DHT speaks /parley/kad/1.0.0.
const Prefix = "/parley"

// Mode says whether a node serves DHT queries.
type Mode string

// The DHT modes. Server is the default, so that a swarm on one machine (where
// automatic reachability detection sees only private addresses) works with
// no flags; client suits a node behind NAT; auto lets libp2p decide.
const (
	Server Mode = "server"
	Client Mode = "client"
	Auto   Mode = "auto"
)

// ParseMode checks a mode given by the user.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case "":
		return Server, nil
	case Server, Client, Auto:
		return m, nil
	}
	return "", fmt.Errorf("dht: unknown mode %q: use server, client or auto", s)
}

// Config is what a node's DHT needs.
type Config struct {
	Mode      Mode
	Bootstrap []peer.AddrInfo
	// Now is the validators' clock; nil means time.Now.
	Now func() time.Time
	// Checked, when set, remembers the presence records whose signatures
	// checked out (see presence.Checked).
	Checked *presence.Checked
	// Refresh is about how often the routing table is refreshed: 0 is
	// DefaultRefresh, a negative value never (the node's own lookups keep
	// its table fresh). A refresh walks to the node's own ID, and to a
	// random ID in each bucket no walk touched for one and a half periods
	// (bucketAge). Bootstrap refreshes every bucket; the first refresh
	// after it comes at a random point in the second half of the period,
	// the next ones a period apart, each spread by up to a tenth.
	Refresh time.Duration
	// PinTable keeps the connections to the routing table's two farthest
	// buckets open whatever the connection caps, as kad-dht does by itself
	// (a lookup's first hop then needs no handshake). By default they are
	// only preferred, by a high tag, when the connection manager trims:
	// pinned, up to 40 mostly idle connections would override the caps the
	// user set, each with its keep-alives and ~3 goroutines.
	PinTable bool
	// OnClosest, when set, is told the peers each of this node's
	// Closest lookups found, nearest first: the node's own key is
	// looked up to store its presence record, and the same peers hold its
	// inbox. It runs on the lookup's caller: keep it short.
	OnClosest func(key string, closest []peer.ID)
}

// DHT is kad-dht, serving requests and holding the routing table, plus
// Parley's walk (Closest, GetValue), its refresher and its counting put
// (see Put).
type DHT struct {
	*kaddht.IpfsDHT
	local     *records.ValueStore // the same records kad-dht serves, for our own puts and gets
	values    ds.Datastore        // where local keeps them
	handoff   *handoff
	validator record.Validator
	pm        *kadpb.ProtocolMessenger
	count     *counters
	onClosest func(key string, closest []peer.ID)
	walksMu   sync.Mutex
	walks     map[string]*sharedWalk // walks of Closest under way, by key
	period    time.Duration
	refresher *refresher // nil: never refreshed
	// ctx ends with Close: the refreshes' walks run under it, and bg
	// holds the one Bootstrap started.
	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup
}

// New builds the DHT on h. It starts serving at once if in server mode;
// Close stops it.
func New(h host.Host, cfg Config) (*DHT, error) {
	mode := kaddht.ModeServer
	switch cfg.Mode {
	case Client:
		mode = kaddht.ModeClient
	case Auto:
		mode = kaddht.ModeAuto
	}
	count := new(counters)
	opts := []kaddht.Option{
		kaddht.ProtocolPrefix(Prefix),
		kaddht.OnRequestHook(count.onRequest),
		kaddht.Mode(mode),
		kaddht.BootstrapPeers(cfg.Bootstrap...),
		kaddht.DisableProviders(),
	}
	// kad-dht's own refresh is off (see refresher): it never refreshes by
	// itself, and with an empty table only connects to the bootstrap peers
	// again. Its period sets how long a peer it has not heard from stays
	// useful in the table.
	period := cfg.Refresh
	if period == 0 {
		period = DefaultRefresh
	}
	opts = append(opts, kaddht.DisableAutoRefresh())
	if period > 0 {
		opts = append(opts, kaddht.RoutingTableRefreshPeriod(time.Duration(float64(period)*bucketAge)))
	}
	nv := record.NamespacedValidator{presence.Namespace: presence.Validator{Now: cfg.Now, Checked: cfg.Checked}}
	values := dssync.MutexWrap(ds.NewMapDatastore())
	opts = append(opts, kaddht.Validator(nv), kaddht.ValueDatastore(values))
	ho := new(handoff)
	dh := tableHost{Host: h, cm: tableConns{ConnManager: h.ConnManager(), pin: cfg.PinTable, added: ho.met}}
	d, err := kaddht.New(dh, opts...)
	if err != nil {
		return nil, fmt.Errorf("dht: %w", err)
	}
	pm, _ := kadpb.NewProtocolMessenger(sender{h}) // no options: cannot fail
	p := &DHT{IpfsDHT: d, local: records.NewValueStore(values, nv, recordAge), values: values, handoff: ho,
		validator: nv, pm: pm, count: count, onClosest: cfg.OnClosest, period: period,
		walks: map[string]*sharedWalk{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	ho.dht.Store(p)
	if period > 0 {
		p.refresher = startRefresher(period, func() { p.refresh(false) })
	}
	return p, nil
}

// Bootstrap fills a server's routing table as it joins: every bucket is
// refreshed, in the background, by Parley's walks (kad-dht's Bootstrap
// would do it with its own lookups). A DHT that never refreshes does
// nothing: its own lookups fill its table.
func (p *DHT) Bootstrap(context.Context) error {
	if p.refresher == nil {
		return nil
	}
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		p.refresh(true)
	}()
	return nil
}

// Close ends the refreshes and their walks, then kad-dht.
func (p *DHT) Close() error {
	p.cancel()
	p.handoff.close()
	if p.refresher != nil {
		p.refresher.stop()
	}
	p.bg.Wait()
	return p.IpfsDHT.Close()
}
