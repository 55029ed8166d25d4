package node

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/dht"
	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/presence"
)

// benchSwarm is swarm for benchmarks (testing.B has no t.Fatal-free path
// through the test helpers).
func benchSwarm(b *testing.B, n int, tune ...func(*Config)) []*Node {
	b.Helper()
	dir := b.TempDir()
	var nodes []*Node
	for i := range n {
		home := filepath.Join(dir, fmt.Sprint("n", i))
		if _, err := identity.Create(home); err != nil {
			b.Fatal(err)
		}
		cfg := Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}}
		cfg.Presence.Republish = time.Hour
		cfg.Presence.Retry = 500 * time.Millisecond
		if i > 0 {
			cfg.Bootstrap = []string{nodes[0].Addrs()[0].String()}
		}
		for _, f := range tune {
			f(&cfg)
		}
		nodes = append(nodes, started(b, cfg))
	}
	return nodes
}

// BenchmarkPresence compares, in one swarm of 20 real nodes on loopback:
//   - raw: kad-dht GetValue of a presence key, nothing else;
//   - resolve: a presence lookup (the same GetValue, then verification and
//     opening of the record);
//   - ping: the libp2p ping round trip between a presentity and a watcher;
//   - notify: from a status change to the watcher's view changing.
//
// Run: go test -run '^$' -bench Presence -benchtime 200x ./node
func BenchmarkPresence(b *testing.B) {
	nodes := benchSwarm(b, 20)
	ctx := context.Background()
	pub, w := nodes[3], nodes[7]
	if _, err := pub.SetVisibility(ctx, "everyone"); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, _ := pub.MyStatus(ctx)
		if st.Accepted >= 3 && st.Asked > 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the record was never stored")
		}
		time.Sleep(50 * time.Millisecond)
	}
	key := presence.Key(pub.ID())
	lookers := []*Node{}
	for _, n := range nodes {
		if n != pub {
			lookers = append(lookers, n)
		}
	}
	// Raw and resolve alternate, from the same node, so that both see the
	// same swarm at the same moment (lookup times drift as tables settle).
	b.Run("lookup", func(b *testing.B) {
		var raw, res []time.Duration
		rawOK, resOK := 0, 0
		i := 0
		// The raw lookup is kad-dht's own GetValue with the quorum the
		// resolver's walk uses (dht.ValueQuorum), so the two differ by
		// what Parley adds and by the walk. Its context is ended after
		// it: once the quorum is met kad-dht stops reading answers, and a
		// query goroutine holding one more waits for the context.
		rawLookup := func(n *Node) {
			start := time.Now()
			rctx, cancel := context.WithCancel(ctx)
			if _, err := n.dht.IpfsDHT.GetValue(rctx, key, kaddht.Quorum(dht.ValueQuorum)); err == nil {
				rawOK++
			}
			cancel()
			raw = append(raw, time.Since(start))
		}
		resolve := func(n *Node) {
			start := time.Now()
			if v, err := n.presence.Resolve(ctx, pub.ID()); err == nil && v.Status == presence.Online {
				resOK++
			}
			res = append(res, time.Since(start))
		}
		for b.Loop() {
			n := lookers[i%len(lookers)]
			// Whichever goes second finds connections already open: take
			// turns going first.
			if i%2 == 0 {
				rawLookup(n)
				resolve(n)
			} else {
				resolve(n)
				rawLookup(n)
			}
			i++
		}
		slices.Sort(raw)
		slices.Sort(res)
		q := func(d []time.Duration, f float64) float64 { return float64(d[int(f*float64(len(d)-1))].Microseconds()) }
		b.ReportMetric(q(raw, 0.5), "raw-p50-µs")
		b.ReportMetric(q(res, 0.5), "resolve-p50-µs")
		b.ReportMetric(q(raw, 0.99), "raw-p99-µs")
		b.ReportMetric(q(res, 0.99), "resolve-p99-µs")
		b.ReportMetric(q(res, 0.5)/q(raw, 0.5), "p50-ratio")
		b.ReportMetric(100*float64(rawOK)/float64(len(raw)), "raw-success-%")
		b.ReportMetric(100*float64(resOK)/float64(len(res)), "resolve-success-%")
		b.ReportMetric(0, "ns/op")
	})
	befriendB(b, pub, w)
	b.Run("ping", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		pctx, cancel := context.WithCancel(ctx)
		defer cancel()
		results := ping.Ping(pctx, pub.Host(), w.ID())
		for b.Loop() {
			r := <-results
			if r.Error != nil {
				b.Fatal(r.Error)
			}
			lat = append(lat, r.RTT)
		}
		percentiles(b, lat)
	})
	b.Run("notify", func(b *testing.B) {
		events, cancel := w.Subscribe()
		defer cancel()
		lat := make([]time.Duration, 0, b.N)
		i := 0
		for b.Loop() {
			i++
			note := fmt.Sprint("change ", i)
			start := time.Now()
			done := make(chan error, 1)
			// SetStatus also saves the status (a disk sync) after it asked
			// for the NOTIFY; the watcher does not wait for that.
			go func() {
				_, err := pub.SetStatus(ctx, api.StatusRequest{Status: "online", Note: note})
				done <- err
			}()
			for e := range events {
				if e.Presence != nil && e.Presence.Note == note {
					break
				}
			}
			lat = append(lat, time.Since(start))
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			// Let the DHT store of this change finish before the next one,
			// as it would between two changes a person makes.
			rec, _ := presence.Parse(pub.presence.Current())
			for st, _ := pub.MyStatus(ctx); st.Seq < rec.Seq; st, _ = pub.MyStatus(ctx) {
				time.Sleep(time.Millisecond)
			}
		}
		percentiles(b, lat)
	})
}

func befriendB(b *testing.B, x, y *Node) {
	ctx := context.Background()
	if _, err := x.AddContact(ctx, api.Contact{Name: "y", ID: y.ID().String()}); err != nil {
		b.Fatal(err)
	}
	if _, err := y.AddContact(ctx, api.Contact{Name: "x", ID: x.ID().String()}); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for x.presence.Watchers() == 0 {
		if time.Now().After(deadline) {
			b.Fatal("no subscription")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
