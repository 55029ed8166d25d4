package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/direct"
	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/internal/pb"
)

// The benchmarks here compare Parley with raw libp2p streams between the
// same two hosts in the same run (DESIGN §12). Run them with
//
//	go test -run '^$' -bench . -benchtime 3000x ./node
//
// and see docs/benchmarks.md for the figures.

const rawProto protocol.ID = "/parley-bench/raw/1.0.0"

const payloadSize = 256

// pairForBench starts alice and bob, connected, with a raw echo-ack
// protocol on bob: for every length-prefixed frame it reads, it writes a
// 16-byte ack, flushing when its input runs dry — the shape of
// /parley/msg/1.0.0 without encryption or persistence.
func pairForBench(b *testing.B) (alice, bob *Node) {
	b.Helper()
	dir := b.TempDir()
	mk := func(name string, boot ...*Node) *Node {
		home := filepath.Join(dir, name)
		if _, err := identity.Create(home); err != nil {
			b.Fatal(err)
		}
		var bs []string
		for _, n := range boot {
			bs = append(bs, n.Addrs()[0].String())
		}
		return started(b, Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: bs})
	}
	alice = mk("alice")
	bob = mk("bob", alice)
	bob.Host().SetStreamHandler(rawProto, rawAcker)
	return alice, bob
}

func rawAcker(s network.Stream) {
	defer s.Close()
	br := bufio.NewReaderSize(s, 64<<10)
	bw := bufio.NewWriterSize(s, 16<<10)
	buf := make([]byte, 64<<10)
	ack := make([]byte, 17)
	ack[0] = 16
	for {
		n, err := binary.ReadUvarint(br)
		if err != nil || n > uint64(len(buf)) {
			return
		}
		if _, err := io.ReadFull(br, buf[:n]); err != nil {
			return
		}
		copy(ack[1:], buf[:16])
		bw.Write(ack)
		if br.Buffered() == 0 {
			if bw.Flush() != nil {
				return
			}
		}
	}
}

// rawStream is the sender's end of the raw protocol.
type rawStream struct {
	s  network.Stream
	br *bufio.Reader
	bw *bufio.Writer
}

func openRaw(b *testing.B, alice, bob *Node) *rawStream {
	s, err := alice.Host().NewStream(context.Background(), bob.ID(), rawProto)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Reset() })
	return &rawStream{s: s, br: bufio.NewReaderSize(s, 64<<10), bw: bufio.NewWriterSize(s, 64<<10)}
}

func (r *rawStream) write(payload []byte) error {
	r.bw.Write(binary.AppendUvarint(nil, uint64(len(payload))))
	_, err := r.bw.Write(payload)
	return err
}

func (r *rawStream) readAck() error {
	var ack [17]byte
	_, err := io.ReadFull(r.br, ack[:])
	return err
}

func percentiles(b *testing.B, d []time.Duration) {
	slices.Sort(d)
	p := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(p(0.50), "p50-µs")
	b.ReportMetric(p(0.99), "p99-µs")
	b.ReportMetric(0, "ns/op") // the percentiles are the figures that matter
}

func textMsg(from, to *Node, i int) *pb.Message {
	body := make([]byte, payloadSize)
	copy(body, fmt.Sprint("message ", i))
	return &pb.Message{Id: direct.NewID(), From: []byte(from.ID()), To: []byte(to.ID()), SentAt: time.Now().UnixMilli(), Kind: pb.Kind_KIND_TEXT, Body: body}
}

// BenchmarkRoundTrip: one 256-byte message and its ack at a time.
//   - raw: a libp2p stream round trip, nothing else.
//   - direct: Parley's send→ack: sealed, opened, persisted (fsync) at the
//     recipient before the ack.
//   - node: what `parley send` waits for: queued durably at the sender,
//     delivered as above, and its delivered state persisted.
func BenchmarkRoundTrip(b *testing.B) {
	alice, bob := pairForBench(b)
	b.Run("raw", func(b *testing.B) {
		r := openRaw(b, alice, bob)
		payload := make([]byte, payloadSize)
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			start := time.Now()
			r.write(payload)
			if err := r.bw.Flush(); err != nil {
				b.Fatal(err)
			}
			if err := r.readAck(); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		percentiles(b, lat)
	})
	b.Run("direct", func(b *testing.B) {
		ctx := context.Background()
		lat := make([]time.Duration, 0, b.N)
		i := 0
		for b.Loop() {
			m := textMsg(alice, bob, i)
			i++
			start := time.Now()
			res, err := alice.direct.Send(ctx, bob.ID(), []*pb.Message{m})
			if err != nil || !res[0].OK {
				b.Fatal(err, res)
			}
			lat = append(lat, time.Since(start))
		}
		percentiles(b, lat)
	})
	b.Run("node", func(b *testing.B) {
		ctx := context.Background()
		text := string(make([]byte, payloadSize))
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			start := time.Now()
			m, err := alice.Send(ctx, api.SendRequest{To: bob.ID().String(), Text: text})
			if err != nil || m.State != "delivered" {
				b.Fatal(err, m.State)
			}
			lat = append(lat, time.Since(start))
		}
		percentiles(b, lat)
	})
}

// BenchmarkThroughput: 256-byte messages as fast as they go.
//   - raw: pipelined frames on one libp2p stream, each acked.
//   - direct: Parley batches on one stream, sealed and persisted (fsync
//     per recipient commit) before their acks.
//   - node: many concurrent `send`s through the outbox, durable at both ends.
func BenchmarkThroughput(b *testing.B) {
	alice, bob := pairForBench(b)
	b.Run("raw", func(b *testing.B) {
		r := openRaw(b, alice, bob)
		payload := make([]byte, payloadSize)
		done := make(chan error, 1)
		b.ResetTimer()
		go func() {
			for range b.N {
				if err := r.readAck(); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		for range b.N {
			r.write(payload)
		}
		r.bw.Flush()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("direct", func(b *testing.B) {
		ctx := context.Background()
		b.ResetTimer()
		for sent := 0; sent < b.N; {
			n := min(direct.MaxBatch, b.N-sent)
			batch := make([]*pb.Message, n)
			for i := range batch {
				batch[i] = textMsg(alice, bob, sent+i)
			}
			res, err := alice.direct.Send(ctx, bob.ID(), batch)
			if err != nil || len(res) != n {
				b.Fatal(err)
			}
			sent += n
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("node", func(b *testing.B) {
		ctx := context.Background()
		text := string(make([]byte, payloadSize))
		const senders = 256
		var wg sync.WaitGroup
		work := make(chan struct{}, b.N)
		for range b.N {
			work <- struct{}{}
		}
		close(work)
		errs := make(chan error, senders)
		b.ResetTimer()
		for range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range work {
					m, err := alice.Send(ctx, api.SendRequest{To: bob.ID().String(), Text: text, WaitMillis: 60000})
					if err == nil && m.State != "delivered" {
						err = fmt.Errorf("state %s", m.State)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}
