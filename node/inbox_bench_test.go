package node

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/parley-p2p/parley/inbox"
	"github.com/parley-p2p/parley/internal/pb"
)

// BenchmarkInbox measures, in one swarm of 10 real nodes on loopback:
//   - lookup+fetch: the floor — one kad-dht GetClosestPeers for the
//     recipient's inbox key plus one fetch round trip to a replica;
//   - collect: a returning recipient's whole collection of 20 waiting
//     messages (lookup, list at every replica, fetch, open, persist, delete
//     everywhere).
//
// Run: go test -run '^$' -bench Inbox -benchtime 50x ./node
func BenchmarkInbox(b *testing.B) {
	// One depositor sends far more than a person would: lift its rate.
	nodes := benchSwarm(b, 10, func(c *Config) {
		c.Inbox.Limits.DepositorItems = 1 << 20
		c.Inbox.Collect = time.Hour
	})
	ctx := context.Background()
	alice, bob := nodes[2], nodes[8]
	sender := inbox.NewSender(inbox.NewClient(alice.host, alice.dht.Closest, 5), keyring(alice), 0)
	// The floor's lookup is kad-dht's own, which the target is stated
	// against; the collection below uses Parley's (Closest).
	client := inbox.NewClient(bob.host, bob.dht.IpfsDHT.GetClosestPeers, 5)
	const batch = 20
	deposit := func(round int) {
		for i := range batch {
			m := &pb.Message{Id: newID(), From: []byte(alice.ID()), To: []byte(bob.ID()), SentAt: time.Now().UnixMilli(),
				Kind: pb.Kind_KIND_TEXT, Body: fmt.Appendf(nil, "round %d message %d", round, i), Seq: uint64(round*batch + i)}
			if st, err := sender.Leave(ctx, m); err != nil || st.Replicas < 3 {
				b.Fatalf("deposit: %+v %v", st, err)
			}
		}
	}
	b.Run("lookup+fetch", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			start := time.Now()
			replicas, err := client.Replicas(ctx, bob.ID())
			if err != nil || len(replicas) == 0 {
				b.Fatal(err)
			}
			if _, err := client.Fetch(ctx, replicas[0], [][]byte{make([]byte, inbox.IDSize)}); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		percentiles(b, lat)
	})
	b.Run("collect", func(b *testing.B) {
		events, cancel := bob.Subscribe()
		defer cancel()
		lat := make([]time.Duration, 0, b.N)
		round := 0
		for b.Loop() {
			b.StopTimer()
			round++
			deposit(round)
			b.StartTimer()
			start := time.Now()
			done := make(chan error, 1)
			go func() {
				n, err := bob.collect.Collect(ctx)
				if err == nil && n != batch {
					err = fmt.Errorf("collected %d of %d", n, batch)
				}
				done <- err
			}()
			// Delivered: the last of them stored and shown (the deletes at
			// the replicas may still be under way).
			for got := 0; got < batch; {
				if e := <-events; e.Type == "message" {
					got++
				}
			}
			lat = append(lat, time.Since(start))
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
		slices.Sort(lat)
		percentiles(b, lat)
	})
}
