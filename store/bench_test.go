package store

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkCommit is the floor under every acknowledged message: one
// durable commit of one received message (bbolt syncs data, then meta).
func BenchmarkCommit(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "parley.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	body := make([]byte, 256)
	lat := make([]time.Duration, 0, b.N)
	i := 0
	for b.Loop() {
		m := &Message{ID: []byte(fmt.Sprintf("%016d", i)), Peer: bob, Body: body, State: Received}
		i++
		start := time.Now()
		if _, err := s.Receive([]*Message{m}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
}
