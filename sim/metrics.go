package sim

import (
	"fmt"
	"os"
	"runtime"
	rtmetrics "runtime/metrics"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/metrics"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/dht"
)

// Result is what a run measured.
type Result struct {
	Digest    string        `json:"digest"`
	Nodes     int           `json:"nodes"`
	Simulated time.Duration `json:"simulated_ns"`
	Wall      time.Duration `json:"wall_ns"`
	// Join is the simulated time the nodes took to join before the
	// workload's clock started (not in Simulated), and JoinWall its wall
	// time (in Wall).
	Join     time.Duration `json:"join_ns"`
	JoinWall time.Duration `json:"join_wall_ns"`
	// EndWall is the wall time the nodes took to stop at the end (in
	// Wall).
	EndWall time.Duration `json:"end_wall_ns"`

	Sent       int     `json:"sent"`        // messages written while the sender was up
	Delivered  int     `json:"delivered"`   // shown at the recipient
	ShownTwice int     `json:"shown_twice"` // shown more than once (must be 0)
	Ratio      float64 `json:"delivery_ratio"`

	Direct Latency `json:"direct_latency"` // send → shown, messages that went directly
	Inbox  Latency `json:"inbox_latency"`  // send → shown, messages that went through replicas

	ResolveTries   int     `json:"resolve_tries"`
	ResolveSuccess float64 `json:"resolve_success"`
	Resolve        Latency `json:"resolve_latency"`
	Notify         Latency `json:"notify_latency"` // status set → a watcher's view changed

	BytesPerNode float64 `json:"bytes_sent_per_node"`
	DHT          DHTWork `json:"dht_per_node_hour"`
	// ConnsPerNodeHour counts connections a node opened or accepted, per
	// simulated hour (each costs a QUIC and TLS handshake).
	ConnsPerNodeHour float64 `json:"connections_per_node_hour"`
	MaxHeldItems     int     `json:"max_held_items"` // items held by replicas at once, all nodes
	MaxHeldBytes     int64   `json:"max_held_bytes"`
	MemPerNode       float64 `json:"mem_per_node_bytes"`  // peak of live heap (as the last GC found it) + stacks / nodes up
	RSSPerNode       float64 `json:"rss_per_node_bytes"`  // peak of the process's resident memory / nodes up
	GoroutinesNode   float64 `json:"goroutines_per_node"` // peak over the samples
	// The medians over the samples: a node's cost in the steady state,
	// without the bursts (joining, the hourly and ten-minute work).
	MemSteady        float64 `json:"mem_per_node_median_bytes"`
	GoroutinesSteady float64 `json:"goroutines_per_node_median"`
	// Open connections per node (each costs ~3 goroutines), and those kept
	// open on purpose (presence subscriptions, pinned DHT peers), medians.
	ConnsSteady     float64   `json:"open_connections_per_node_median"`
	KeptSteady      float64   `json:"kept_connections_per_node_median"`
	Samples         []Sample  `json:"samples"`
	Notes           []string  `json:"notes,omitempty"`
	DeliveryLatency []float64 `json:"-"` // seconds, every delivery, for the report's CDF
	DirectCDF       []float64 `json:"-"`
	InboxCDF        []float64 `json:"-"`
}

// DHTWork is a node's DHT work per hour of simulated time, on average over
// the nodes: the lookups Parley started (by kind) and the requests the node
// answered as a server.
type DHTWork struct {
	Lookups float64 `json:"lookups"`
	Closest float64 `json:"closest"` // inbox replicas, presence puts
	Value   float64 `json:"value"`   // presence resolves
	Widened float64 `json:"widened"` // value lookups that went past the neighbourhood (none had the record)
	Peer    float64 `json:"peer"`    // addresses of a peer to open a stream to
	Served  float64 `json:"served"`  // requests answered (includes kad-dht's own refreshes)
	// ServedRouting is the part of Served for kad-dht's routing-table
	// upkeep: peers nearest a peer ID, not a record's key (dht.Stats).
	ServedRouting float64 `json:"served_routing"`
	// HandedOff is records a server stored at a newcomer to their
	// neighbourhood (dht.Stats).
	HandedOff float64 `json:"handed_off"`
}

// Latency is a distribution's summary, in milliseconds.
type Latency struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	P99 float64 `json:"p99_ms"`
}

// Sample is the state at one moment of simulated time.
type Sample struct {
	At         time.Duration `json:"at_ns"`
	Up         int           `json:"up"`
	Delivered  int           `json:"delivered"`
	Sent       int           `json:"sent"`
	MemPerNode float64       `json:"mem_per_node_bytes"`
	RSSPerNode float64       `json:"rss_per_node_bytes"`
	Goroutines int           `json:"goroutines"`
	HeldItems  int           `json:"held_items"`
	Conns      int           `json:"connections"` // open, counted at each end
	Kept       int           `json:"kept"`        // of those, protected from trimming
}

func summarize(d []time.Duration) (Latency, []float64) {
	if len(d) == 0 {
		return Latency{}, nil
	}
	slices.Sort(d)
	ms := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))]) / float64(time.Millisecond) }
	secs := make([]float64, len(d))
	for i, v := range d {
		secs[i] = v.Seconds()
	}
	return Latency{N: len(d), P50: ms(0.5), P95: ms(0.95), P99: ms(0.99)}, secs
}

// recorder collects what the nodes report, from many goroutines.
type recorder struct {
	mu        sync.Mutex
	startedAt time.Time
	sends     map[string]*sendRec // by message text
	shown     map[string]int
	stored    map[string]bool
	status    map[string]time.Time // status note -> when set
	notified  map[string]bool      // note|watcher seen
	notify    []time.Duration
	resolves  []time.Duration
	resolveOK int
	tries     int
	cancels   []func()
	bytesDone int64     // traffic of node runs that ended
	dhtDone   dht.Stats // DHT work of node runs that ended
	conns     atomic.Int64
	bw        []*metrics.BandwidthCounter
	samples   []Sample
	notes     []string
	direct    []time.Duration
	inbox     []time.Duration
}

type sendRec struct {
	from, to int
	at       time.Time
}

func newRecorder(n int) *recorder {
	return &recorder{
		sends: map[string]*sendRec{}, shown: map[string]int{}, stored: map[string]bool{},
		status: map[string]time.Time{}, notified: map[string]bool{}, cancels: make([]func(), n),
	}
}

func (r *recorder) setCancel(i int, c func()) {
	r.mu.Lock()
	r.cancels[i] = c
	r.mu.Unlock()
}

func (r *recorder) cancel(i int) {
	r.mu.Lock()
	c := r.cancels[i]
	r.cancels[i] = nil
	r.mu.Unlock()
	if c != nil {
		c()
	}
}

func (r *recorder) stopped(i int, bw *metrics.BandwidthCounter, st dht.Stats) {
	if bw == nil {
		return
	}
	r.mu.Lock()
	r.bytesDone += bw.GetBandwidthTotals().TotalOut
	r.dhtDone.Closest += st.Closest
	r.dhtDone.Value += st.Value
	r.dhtDone.Widened += st.Widened
	r.dhtDone.Peer += st.Peer
	r.dhtDone.Served += st.Served
	r.dhtDone.ServedRouting += st.ServedRouting
	r.dhtDone.HandedOff += st.HandedOff
	r.mu.Unlock()
}

func (r *recorder) connected() { r.conns.Add(1) }

// shiftSamples moves the samples taken so far by d.
func (r *recorder) shiftSamples(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.samples {
		r.samples[i].At += d
	}
}

func (r *recorder) note(s string) {
	r.mu.Lock()
	r.notes = append(r.notes, s)
	r.mu.Unlock()
}

func (r *recorder) sent(text string, from, to int, at time.Time) {
	r.mu.Lock()
	r.sends[text] = &sendRec{from: from, to: to, at: at}
	r.mu.Unlock()
}

func (r *recorder) statusSet(i int, note string, at time.Time) {
	r.mu.Lock()
	r.status[note] = at
	r.mu.Unlock()
}

func (r *recorder) resolved(ok bool, d time.Duration) {
	r.mu.Lock()
	r.tries++
	if ok {
		r.resolveOK++
		r.resolves = append(r.resolves, d)
	}
	r.mu.Unlock()
}

// event takes one live event from node i.
func (r *recorder) event(i int, e api.Event, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case e.Type == "message" && e.Message != nil:
		s := r.sends[e.Message.Text]
		if s == nil || s.to != i {
			return
		}
		r.shown[e.Message.Text]++
		if r.shown[e.Message.Text] == 1 {
			if r.stored[e.Message.Text] {
				r.inbox = append(r.inbox, at.Sub(s.at))
			} else {
				r.direct = append(r.direct, at.Sub(s.at))
			}
		}
	case e.Type == "state" && e.Message != nil && e.Message.State == "stored":
		r.stored[e.Message.Text] = true
	case e.Type == "presence" && e.Presence != nil:
		set, ok := r.status[e.Presence.Note]
		key := e.Presence.Note + "|" + fmt.Sprint(i)
		if ok && !r.notified[key] && e.Presence.Source == "notify" {
			r.notified[key] = true
			r.notify = append(r.notify, at.Sub(set))
		}
	}
}

func (r *recorder) sample(at time.Duration, w *world) {
	// Live memory, not what the collector has yet to reclaim: how much the
	// heap overshoots is the collector's policy (GOGC), not the nodes'
	// need. The process's resident size, which includes that overshoot,
	// is reported beside it.
	mem := readMemory()
	s := Sample{At: at, Goroutines: runtime.NumGoroutine()}
	w.mu.Lock()
	for _, n := range w.nodes {
		if n != nil {
			s.Up++
			info, err := n.Info(w.ctx)
			if err == nil {
				s.HeldItems += info.Held
			}
			h := n.Host()
			for _, c := range h.Network().Conns() {
				s.Conns++
				if h.ConnManager().IsProtected(c.RemotePeer(), "") {
					s.Kept++
				}
			}
		}
	}
	w.mu.Unlock()
	if s.Up > 0 {
		s.MemPerNode = float64(mem.live+mem.stacks) / float64(s.Up)
		s.RSSPerNode = float64(mem.resident) / float64(s.Up)
	}
	r.mu.Lock()
	s.Sent = len(r.sends)
	for _, c := range r.shown {
		if c > 0 {
			s.Delivered++
		}
	}
	r.samples = append(r.samples, s)
	r.mu.Unlock()
}

func (r *recorder) progress(at, end time.Duration) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) == 0 {
		return ""
	}
	s := r.samples[len(r.samples)-1]
	return fmt.Sprintf("sim %v / %v: %d nodes up, %d/%d delivered, %.1f MB and %d goroutines per node   ",
		at.Round(time.Second), end.Round(time.Second), s.Up, s.Delivered, s.Sent, s.MemPerNode/1e6, s.Goroutines/max(s.Up, 1))
}

func (r *recorder) result(p *Plan, simulated time.Duration) *Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &Result{Digest: p.Digest(), Nodes: p.Scenario.Nodes, Simulated: simulated, Sent: len(r.sends), Samples: r.samples, Notes: r.notes}
	for _, c := range r.shown {
		if c > 0 {
			res.Delivered++
		}
		if c > 1 {
			res.ShownTwice++
		}
	}
	if res.Sent > 0 {
		res.Ratio = float64(res.Delivered) / float64(res.Sent)
	}
	for text, sr := range r.sends {
		if r.shown[text] == 0 {
			res.Notes = append(res.Notes, fmt.Sprintf("not delivered: %s from node %d to node %d, sent at %v (stored at replicas: %v)",
				text, sr.from, sr.to, sr.at.Sub(r.startedAt).Round(time.Second), r.stored[text]))
		}
	}
	res.Direct, res.DirectCDF = summarize(r.direct)
	res.Inbox, res.InboxCDF = summarize(r.inbox)
	res.Notify, _ = summarize(r.notify)
	res.Resolve, _ = summarize(r.resolves)
	res.ResolveTries = r.tries
	if r.tries > 0 {
		res.ResolveSuccess = float64(r.resolveOK) / float64(r.tries)
	}
	var mems, gors, conns, kept []float64
	for _, s := range r.samples {
		if s.At >= 0 && s.Up > 0 {
			mems = append(mems, s.MemPerNode)
			gors = append(gors, float64(s.Goroutines)/float64(s.Up))
			conns = append(conns, float64(s.Conns)/float64(s.Up))
			kept = append(kept, float64(s.Kept)/float64(s.Up))
		}
	}
	res.MemSteady, res.GoroutinesSteady = median(mems), median(gors)
	res.ConnsSteady, res.KeptSteady = median(conns), median(kept)
	for _, s := range r.samples {
		if s.At < 0 {
			// Joining: with few nodes up, the process's own fixed costs
			// divided among them say nothing about a node's.
			continue
		}
		res.MemPerNode = max(res.MemPerNode, s.MemPerNode)
		res.RSSPerNode = max(res.RSSPerNode, s.RSSPerNode)
		if s.Up > 0 {
			res.GoroutinesNode = max(res.GoroutinesNode, float64(s.Goroutines)/float64(s.Up))
		}
		res.MaxHeldItems = max(res.MaxHeldItems, s.HeldItems)
	}
	res.BytesPerNode = float64(r.bytesDone) / float64(p.Scenario.Nodes)
	if hours := simulated.Hours(); hours > 0 {
		per := func(n int64) float64 { return float64(n) / float64(p.Scenario.Nodes) / hours }
		res.DHT = DHTWork{
			Closest: per(r.dhtDone.Closest), Value: per(r.dhtDone.Value), Widened: per(r.dhtDone.Widened), Peer: per(r.dhtDone.Peer),
			Lookups: per(r.dhtDone.Lookups()), Served: per(r.dhtDone.Served), ServedRouting: per(r.dhtDone.ServedRouting),
			HandedOff: per(r.dhtDone.HandedOff),
		}
		res.ConnsPerNodeHour = per(r.conns.Load())
	}
	return res
}

// SpreadSummary is how much each metric varied over runs of one plan:
// scheduling is not deterministic even in virtual time.
type SpreadSummary struct {
	Runs    int            `json:"runs"`
	Metrics []MetricSpread `json:"metrics"`
}

// MetricSpread is one metric's range over runs.
type MetricSpread struct {
	Name string  `json:"name"`
	Unit string  `json:"unit"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
}

// Spread summarizes runs of one plan.
func Spread(rs []*Result) SpreadSummary {
	s := SpreadSummary{Runs: len(rs)}
	add := func(name, unit string, f func(*Result) float64) {
		m := MetricSpread{Name: name, Unit: unit, Min: f(rs[0]), Max: f(rs[0])}
		for _, r := range rs[1:] {
			m.Min, m.Max = min(m.Min, f(r)), max(m.Max, f(r))
		}
		s.Metrics = append(s.Metrics, m)
	}
	add("delivery ratio", "", func(r *Result) float64 { return r.Ratio })
	add("shown twice", "messages", func(r *Result) float64 { return float64(r.ShownTwice) })
	add("direct p50", "ms", func(r *Result) float64 { return r.Direct.P50 })
	add("direct p99", "ms", func(r *Result) float64 { return r.Direct.P99 })
	add("inbox p50", "ms", func(r *Result) float64 { return r.Inbox.P50 })
	add("inbox p99", "ms", func(r *Result) float64 { return r.Inbox.P99 })
	add("resolve p50", "ms", func(r *Result) float64 { return r.Resolve.P50 })
	add("resolve success", "", func(r *Result) float64 { return r.ResolveSuccess })
	add("notify p50", "ms", func(r *Result) float64 { return r.Notify.P50 })
	add("notify p95", "ms", func(r *Result) float64 { return r.Notify.P95 })
	add("memory per node", "MB", func(r *Result) float64 { return r.MemPerNode / 1e6 })
	add("resident per node", "MB", func(r *Result) float64 { return r.RSSPerNode / 1e6 })
	add("goroutines per node", "", func(r *Result) float64 { return r.GoroutinesNode })
	add("goroutines per node, median", "", func(r *Result) float64 { return r.GoroutinesSteady })
	add("open connections per node, median", "", func(r *Result) float64 { return r.ConnsSteady })
	add("DHT lookups", "per node-hour", func(r *Result) float64 { return r.DHT.Lookups })
	add("DHT requests served", "per node-hour", func(r *Result) float64 { return r.DHT.Served })
	add("DHT requests served for routing", "per node-hour", func(r *Result) float64 { return r.DHT.ServedRouting })
	add("wall time", "s", func(r *Result) float64 { return r.Wall.Seconds() })
	return s
}

// memory is what the process holds, in bytes.
type memory struct {
	live     uint64 // heap the last collection found live
	stacks   uint64 // goroutine stacks
	resident uint64 // resident set size
}

// readMemory reads the memory figures without stopping anything. The live
// heap is the last collection's count, at most one cycle old (about a
// simulated minute at 1000 nodes), rather than a collection forced for
// the sample: virtual time cannot move while the sampler waits for one,
// so each stalled the whole swarm (about a second and a half of wall time
// at 1000 nodes, every simulated minute). The resident size comes from
// /proc where there is one, otherwise it is what the Go runtime holds from
// the system and has not given back.
func readMemory() memory {
	ms := []rtmetrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
	}
	rtmetrics.Read(ms)
	v := func(i int) uint64 {
		if ms[i].Value.Kind() != rtmetrics.KindUint64 {
			return 0
		}
		return ms[i].Value.Uint64()
	}
	m := memory{live: v(0), stacks: v(1), resident: v(2) - v(3)}
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		var size, resident uint64
		if _, err := fmt.Sscan(string(b), &size, &resident); err == nil {
			m.resident = resident * uint64(os.Getpagesize())
		}
	}
	return m
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}
