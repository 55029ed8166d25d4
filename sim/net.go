package sim

import (
	"errors"
	"maps"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	"github.com/quic-go/quic-go"
	"go.uber.org/fx"
)

// internet carries the nodes' UDP datagrams (their QUIC packets) in virtual
// time. Each node has an endpoint, the net.PacketConn its QUIC transport
// reads and writes, behind a link of its class. A datagram waits for the
// sender's uplink to be free, crosses in the sum of the two ends' one-way
// latencies, waits for the receiver's downlink, and arrives on the tick
// grid. All of that is worked out when it is sent, and the datagram goes
// straight into the receiver's queue, whose timer the sender sets: the
// receiver's reader wakes once, at the arrival time, and nothing else runs
// for it.
//
// go-libp2p's simnet, which this replaces, hands each datagram through
// three goroutines (the sender's uplink, one router for the whole network,
// the receiver's downlink), each waking at an instant of its own. The
// simulator advances virtual time only when every goroutine is blocked, so
// each of those instants was a step with little to run on two cores, and
// the one router was on the path of every datagram of the swarm.
type internet struct {
	tick time.Duration // the arrival grid; 0: exact
	cut  atomic.Bool   // datagrams between the two sides are lost
	down atomic.Bool   // every datagram is lost: the simulated world has ended

	// ends maps each address to its endpoint. Every datagram looks its
	// destination up, and nodes come and go only at churn: a new map
	// replaces the old one at each change (under mu), and a lookup takes
	// no lock.
	mu   sync.Mutex
	ends atomic.Pointer[map[netip.AddrPort]*endpoint]
}

// maxQueue is the longest a datagram waits for a link; one that would wait
// longer is dropped, as a router drops what its buffer cannot hold. QUIC
// then sees the loss and slows down.
const maxQueue = 100 * time.Millisecond

func newInternet(tick time.Duration) *internet {
	n := &internet{tick: tick}
	n.ends.Store(&map[netip.AddrPort]*endpoint{})
	return n
}

// change replaces the address map with a changed copy of it.
func (n *internet) change(f func(map[netip.AddrPort]*endpoint) error) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	ends := maps.Clone(*n.ends.Load())
	if err := f(ends); err != nil {
		return err
	}
	n.ends.Store(&ends)
	return nil
}

// listen opens the endpoint of a node at addr: its one-way latency to the
// core, its bandwidth both ways (bits/s; 0: unlimited) and its side of a
// partition.
func (n *internet) listen(addr *net.UDPAddr, oneWay time.Duration, bitsPerSec int, side bool) (*endpoint, error) {
	key := udpKey(addr)
	e := &endpoint{
		nw: n, addr: addr, key: key, oneWay: oneWay, side: side,
		up: link{bitsPerSec: bitsPerSec}, down: link{bitsPerSec: bitsPerSec},
		wake: make(chan struct{}, 1), done: make(chan struct{}),
		timer: time.NewTimer(time.Hour),
	}
	e.timer.Stop()
	err := n.change(func(ends map[netip.AddrPort]*endpoint) error {
		if _, taken := ends[key]; taken {
			return errors.New("sim: address in use: " + addr.String())
		}
		ends[key] = e
		return nil
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

func (n *internet) endpoint(addr net.Addr) *endpoint {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return nil
	}
	return (*n.ends.Load())[udpKey(ua)]
}

func udpKey(a *net.UDPAddr) netip.AddrPort {
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// quicTransport makes libp2p's QUIC transport listen and dial over the
// endpoint listen opens (with the link given), as go-libp2p's simlibp2p
// does for simnet.
func (n *internet) quicTransport(oneWay time.Duration, bitsPerSec int, side bool) libp2p.Option {
	var ip atomic.Pointer[net.IP]
	return libp2p.QUICReuse(
		func(l fx.Lifecycle, reset quic.StatelessResetKey, token quic.TokenGeneratorKey, opts ...quicreuse.Option) (*quicreuse.ConnManager, error) {
			cm, err := quicreuse.NewConnManager(reset, token, opts...)
			if err != nil {
				return nil, err
			}
			// A connection manager passed in is not closed by the host.
			l.Append(fx.StopHook(cm.Close))
			return cm, nil
		},
		quicreuse.OverrideSourceIPSelector(func() (quicreuse.SourceIPSelector, error) {
			return sourceIP{&ip}, nil
		}),
		quicreuse.OverrideListenUDP(func(_ string, addr *net.UDPAddr) (net.PacketConn, error) {
			ip.Store(&addr.IP)
			return n.listen(addr, oneWay, bitsPerSec, side)
		}),
	)
}

// sourceIP answers that a node sends from the one address it listens on.
type sourceIP struct{ ip *atomic.Pointer[net.IP] }

func (s sourceIP) PreferredSourceIPForDestination(*net.UDPAddr) (net.IP, error) {
	if ip := s.ip.Load(); ip != nil {
		return *ip, nil
	}
	return nil, errors.New("sim: not listening yet")
}

// link is one direction of a node's connection to the core: datagrams go
// through it one after another at its bandwidth.
type link struct {
	bitsPerSec int       // 0: unlimited
	free       time.Time // when the datagrams it has taken are through
}

// take queues a datagram of size bytes that reaches the link at t and
// returns when it is through, or false when it would wait more than
// maxQueue (dropped). Datagrams are queued in the order they are taken.
func (l *link) take(t time.Time, size int) (time.Time, bool) {
	if l.bitsPerSec <= 0 {
		return t, true
	}
	start := t
	if l.free.After(t) {
		start = l.free
	}
	if start.Sub(t) > maxQueue {
		return time.Time{}, false
	}
	l.free = start.Add(time.Duration(int64(size) * 8 * int64(time.Second) / int64(l.bitsPerSec)))
	return l.free, true
}

// endpoint is a node's UDP socket on the network. Only the QUIC
// transport's reader calls ReadFrom; any goroutine may call WriteTo.
type endpoint struct {
	nw     *internet
	addr   *net.UDPAddr
	key    netip.AddrPort
	oneWay time.Duration
	side   bool

	mu       sync.Mutex
	up, down link
	queue    arrivals // datagrams on their way here, by arrival time
	seq      uint64   // keeps datagrams that arrive together in order
	deadline time.Time
	closed   bool

	// timer is set for the arrival of the queue's head whenever the queue
	// is not empty: by the writer whose datagram becomes the head, and by
	// the reader when it takes the head. A stale firing only makes the
	// reader look again.
	timer *time.Timer
	wake  chan struct{} // the read deadline changed
	done  chan struct{} // closed by Close
}

type arrival struct {
	at   time.Time
	seq  uint64
	from *net.UDPAddr
	buf  *[]byte
}

// arrivals is a min-heap by arrival time, then by sequence. It is typed
// (container/heap boxes every element pushed and popped into an
// interface: an allocation per datagram, twice).
type arrivals []arrival

func (a arrivals) less(i, j int) bool {
	if c := a[i].at.Compare(a[j].at); c != 0 {
		return c < 0
	}
	return a[i].seq < a[j].seq
}

func (a *arrivals) push(x arrival) {
	*a = append(*a, x)
	h := *a
	for i := len(h) - 1; i > 0; {
		up := (i - 1) / 2
		if !h.less(i, up) {
			break
		}
		h[i], h[up] = h[up], h[i]
		i = up
	}
}

func (a *arrivals) pop() arrival {
	h := *a
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h[last] = arrival{}
	h = h[:last]
	for i := 0; ; {
		l, r, least := 2*i+1, 2*i+2, i
		if l < len(h) && h.less(l, least) {
			least = l
		}
		if r < len(h) && h.less(r, least) {
			least = r
		}
		if least == i {
			break
		}
		h[i], h[least] = h[least], h[i]
		i = least
	}
	*a = h
	return top
}

// errDeadline ends a read whose deadline passed. It is deliberately not a
// net.Error that says Temporary: quic-go sets a deadline in the past to
// stop its reader, which must then return rather than read again.
var errDeadline = errors.New("sim: read deadline passed")

// WriteTo sends one datagram. Like UDP it never blocks and never fails for
// the network's sake: a datagram to nowhere, across the cut, after the end
// or beyond a full queue is lost.
func (e *endpoint) WriteTo(b []byte, addr net.Addr) (int, error) {
	now := time.Now()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return 0, net.ErrClosed
	}
	sent, ok := e.up.take(now, len(b))
	e.mu.Unlock()
	to := e.nw.endpoint(addr)
	if !ok || to == nil || e.nw.down.Load() || (e.nw.cut.Load() && e.side != to.side) {
		return len(b), nil
	}
	to.arrive(sent.Add(e.oneWay+to.oneWay), e.addr, b)
	return len(b), nil
}

// arrive queues a copy of b, which reaches this endpoint's downlink at t.
func (e *endpoint) arrive(t time.Time, from *net.UDPAddr, b []byte) {
	e.mu.Lock()
	through, ok := e.down.take(t, len(b))
	if e.closed || !ok {
		e.mu.Unlock()
		return
	}
	buf := getBuf(len(b))
	copy(*buf, b)
	e.seq++
	at := onGrid(through, e.nw.tick)
	e.queue.push(arrival{at: at, seq: e.seq, from: from, buf: buf})
	if e.queue[0].seq == e.seq {
		e.timer.Reset(at.Sub(time.Now()))
	}
	e.mu.Unlock()
}

func (e *endpoint) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// ReadFrom waits for the next datagram to arrive.
func (e *endpoint) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			return 0, nil, net.ErrClosed
		}
		now := time.Now()
		if len(e.queue) > 0 && !e.queue[0].at.After(now) {
			a := e.queue.pop()
			if len(e.queue) > 0 && e.queue[0].at.After(now) {
				e.timer.Reset(e.queue[0].at.Sub(now))
			}
			e.mu.Unlock()
			n := copy(p, *a.buf)
			putBuf(a.buf)
			return n, a.from, nil
		}
		if !e.deadline.IsZero() && !now.Before(e.deadline) {
			e.mu.Unlock()
			return 0, nil, errDeadline
		}
		deadline := e.deadline
		e.mu.Unlock()
		// A deadline is rare (quic-go sets one to stop this reader).
		var expiry *time.Timer
		var expired <-chan time.Time
		if !deadline.IsZero() {
			expiry = time.NewTimer(deadline.Sub(now))
			expired = expiry.C
		}
		select {
		case <-e.timer.C:
		case <-expired:
		case <-e.wake:
		case <-e.done:
		}
		if expiry != nil {
			expiry.Stop()
		}
	}
}

// Close closes the endpoint; datagrams on their way to it are lost.
func (e *endpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.timer.Stop()
	close(e.done)
	for _, a := range e.queue {
		putBuf(a.buf)
	}
	e.queue = nil
	e.mu.Unlock()
	return e.nw.change(func(ends map[netip.AddrPort]*endpoint) error {
		if ends[e.key] == e {
			delete(ends, e.key)
		}
		return nil
	})
}

func (e *endpoint) LocalAddr() net.Addr { return e.addr }

func (e *endpoint) SetDeadline(t time.Time) error { return e.SetReadDeadline(t) }

func (e *endpoint) SetReadDeadline(t time.Time) error {
	e.mu.Lock()
	e.deadline = t
	e.mu.Unlock()
	e.signal()
	return nil
}

// SetWriteDeadline does nothing: writes never block.
func (e *endpoint) SetWriteDeadline(time.Time) error { return nil }

// SetReadBuffer and SetWriteBuffer are there for quic-go, which otherwise
// warns that it cannot size the socket's buffers.
func (e *endpoint) SetReadBuffer(int) error  { return nil }
func (e *endpoint) SetWriteBuffer(int) error { return nil }

// onGrid is t moved to the first tick at or after it (see Scenario.Tick).
func onGrid(t time.Time, tick time.Duration) time.Time {
	if tick <= 0 {
		return t
	}
	if late := t.UnixNano() % int64(tick); late != 0 {
		t = t.Add(tick - time.Duration(late))
	}
	return t
}

// Datagram copies come from a pool: a swarm sends millions of them.
const pooledSize = 2048

var bufs = sync.Pool{New: func() any { b := make([]byte, pooledSize); return &b }}

func getBuf(n int) *[]byte {
	if n > pooledSize {
		b := make([]byte, n)
		return &b
	}
	b := bufs.Get().(*[]byte)
	*b = (*b)[:n]
	return b
}

func putBuf(b *[]byte) {
	if cap(*b) == pooledSize {
		bufs.Put(b)
	}
}
