package sim

import (
	"cmp"
	"errors"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// TestOnGrid: a datagram arrives at the first tick at or after its due
// time, and exactly on time with no tick.
func TestOnGrid(t *testing.T) {
	t0 := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		sent, d, tick, want time.Duration
	}{
		{0, 5 * time.Millisecond, time.Millisecond, 5 * time.Millisecond},
		{300 * time.Microsecond, 5 * time.Millisecond, time.Millisecond, 5700 * time.Microsecond},
		{999 * time.Microsecond, 20 * time.Millisecond, time.Millisecond, 20001 * time.Microsecond},
		{time.Hour + 1, 10 * time.Millisecond, 4 * time.Millisecond, 12*time.Millisecond - 1},
		{300 * time.Microsecond, 5 * time.Millisecond, 0, 5 * time.Millisecond},
	} {
		sent := t0.Add(c.sent)
		if got := onGrid(sent.Add(c.d), c.tick).Sub(sent); got != c.want {
			t.Errorf("sent at +%v with latency %v on a %v grid: delivered after %v, want %v", c.sent, c.d, c.tick, got, c.want)
		}
	}
}

// TestLink: datagrams go through a link one after another at its
// bandwidth, and one that would wait longer than maxQueue is dropped.
func TestLink(t *testing.T) {
	t0 := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	l := link{bitsPerSec: 8_000_000} // 1 byte per µs
	if got, _ := l.take(t0, 1000); got != t0.Add(time.Millisecond) {
		t.Fatalf("first datagram through at +%v, want +1ms", got.Sub(t0))
	}
	// Sent at once behind it: waits for the first.
	if got, _ := l.take(t0, 500); got != t0.Add(1500*time.Microsecond) {
		t.Fatalf("second datagram through at +%v, want +1.5ms", got.Sub(t0))
	}
	// Sent after the link went idle: no wait.
	if got, _ := l.take(t0.Add(time.Second), 1000); got != t0.Add(time.Second+time.Millisecond) {
		t.Fatalf("later datagram through at +%v, want +1.001s", got.Sub(t0))
	}
	// Fill the queue: 100 ms of waiting is the most.
	at := t0.Add(2 * time.Second)
	taken := 0
	for range 200 {
		if _, ok := l.take(at, 1000); ok {
			taken++
		}
	}
	if taken != 101 {
		t.Fatalf("%d datagrams of 1 ms each taken at once, want 101 (the first, then 100 ms of queue)", taken)
	}
	unlimited := link{}
	if got, ok := unlimited.take(t0, 1<<20); !ok || got != t0 {
		t.Fatalf("an unlimited link delayed a datagram to +%v (ok %v)", got.Sub(t0), ok)
	}
}

// TestInternet: a datagram between two endpoints takes the sum of their
// one-way latencies and each end's serialization, on the tick grid; the cut
// loses it; a read deadline and Close end a waiting read.
func TestInternet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		in := newInternet(time.Millisecond)
		a, err := in.listen(&net.UDPAddr{IP: address(1), Port: 8000}, 5*time.Millisecond, 8_000_000, false)
		if err != nil {
			t.Fatal(err)
		}
		b, err := in.listen(&net.UDPAddr{IP: address(2), Port: 8000}, 20*time.Millisecond, 0, true)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.listen(&net.UDPAddr{IP: address(2), Port: 8000}, 0, 0, false); err == nil {
			t.Fatal("two endpoints on one address")
		}
		read := func(e *endpoint) (string, time.Duration, error) {
			t0 := time.Now()
			buf := make([]byte, 100)
			n, _, err := e.ReadFrom(buf)
			return string(buf[:n]), time.Since(t0), err
		}
		time.Sleep(300 * time.Microsecond) // off the grid
		for _, m := range []string{"one", "two"} {
			if _, err := a.WriteTo([]byte(m+string(make([]byte, 497))), b.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
		// 500 bytes at 1 byte/µs through a's uplink, then 25 ms: +25.5 ms
		// and +26 ms, on the grid: 25.7 and 26.7 after sending at +0.3 ms.
		for _, want := range []struct {
			text  string
			after time.Duration
		}{{"one", 25700 * time.Microsecond}, {"two", 1000 * time.Microsecond}} {
			got, after, err := read(b)
			if err != nil || got[:3] != want.text || after != want.after {
				t.Fatalf("read %q after %v (%v), want %q after %v", got[:3], after, err, want.text, want.after)
			}
		}
		in.cut.Store(true)
		b.WriteTo([]byte("lost"), a.LocalAddr())
		a.SetReadDeadline(time.Now().Add(time.Second))
		if _, after, err := read(a); !errors.Is(err, errDeadline) || after != time.Second {
			t.Fatalf("read across the cut: %v after %v, want the deadline after 1s", err, after)
		}
		in.cut.Store(false)
		a.SetReadDeadline(time.Time{})
		go func() {
			time.Sleep(time.Minute)
			a.Close()
		}()
		if _, after, err := read(a); !errors.Is(err, net.ErrClosed) || after != time.Minute {
			t.Fatalf("read on a closed endpoint: %v after %v", err, after)
		}
		if in.endpoint(a.LocalAddr()) != nil {
			t.Fatal("a closed endpoint still receives")
		}
		if n, err := b.WriteTo([]byte("to nowhere"), a.LocalAddr()); err != nil || n != 10 {
			t.Fatalf("a datagram to nowhere: %d, %v; want it lost quietly", n, err)
		}
		b.Close()
	})
}

// TestArrivals: the queue gives datagrams back by arrival time, those due
// together in the order they were sent, however they were pushed and
// popped in between.
func TestArrivals(t *testing.T) {
	t0 := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	var q arrivals
	var want []arrival
	seq := uint64(0)
	for range 2000 {
		if len(q) > 0 && rng.IntN(3) == 0 {
			slices.SortFunc(want, func(a, b arrival) int {
				if c := a.at.Compare(b.at); c != 0 {
					return c
				}
				return cmp.Compare(a.seq, b.seq)
			})
			got := q.pop()
			if got.at != want[0].at || got.seq != want[0].seq {
				t.Fatalf("popped (%v, %d), want (%v, %d)", got.at.Sub(t0), got.seq, want[0].at.Sub(t0), want[0].seq)
			}
			want = want[1:]
			continue
		}
		seq++
		a := arrival{at: t0.Add(time.Duration(rng.IntN(20)) * time.Millisecond), seq: seq}
		q.push(a)
		want = append(want, a)
	}
	if len(q) != len(want) {
		t.Fatalf("%d queued, want %d", len(q), len(want))
	}
}
