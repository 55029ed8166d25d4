// Package sim runs many real Parley nodes — the production node package,
// nothing re-implemented — in one process, in virtual time
// (testing/synctest), over libp2p's QUIC transport on simulated UDP
// sockets of its own, with churn, partitions and a message workload fixed
// by a seed, and reports delivery, latency and cost.
package sim

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/parley-p2p/parley/node"
)

// Scenario is what to simulate. Zero fields take the defaults; for the
// shares and rates, where zero is a scenario of its own (no churn, no
// messages), a negative value means none.
type Scenario struct {
	Nodes    int           // default 50
	Duration time.Duration // simulated time of the workload; default 10 min
	Seed     uint64

	// Link classes: a share of nodes are clients (DHT client mode, as users
	// behind NAT would be), the rest servers; each class has its own one-way
	// latency to the core and bandwidth.
	ClientShare     float64       // default 0.8; negative: none (every node a server)
	ServerLatency   time.Duration // default 10 ms
	ClientLatency   time.Duration // default 40 ms
	ServerBandwidth int           // bits/s; default 100 Mbit/s
	ClientBandwidth int           // bits/s; default 20 Mbit/s
	// Tick is the grid of virtual time packets are delivered on: each
	// arrives at the first tick at or after its due time, so up to one tick
	// late. Default 1 ms; negative: exact. Deliveries then fall together
	// and the simulator takes fewer, fuller steps of virtual time, with
	// more nodes to run on the cores at each (one simulated hour at 300
	// nodes: ~20 % less wall time).
	Tick time.Duration

	// Churn: the share of nodes that leave during the run, each once, and
	// come back with their stores after Downtime.
	Churn    float64       // default 0.1; negative: none
	Downtime time.Duration // default 3 min

	// Partition: for [PartitionAt, PartitionAt+PartitionFor) the swarm is
	// cut in two (PartitionShare of the nodes on one side).
	PartitionAt    time.Duration
	PartitionFor   time.Duration
	PartitionShare float64 // default 0.5 when a partition is set

	// Workload: each node writes to its contacts at MessageRate per
	// simulated hour (Poisson); Contacts per node, chosen at random.
	MessageRate float64 // default 30; negative: none
	Contacts    int     // default 5
	// PresenceRate is status changes per node per simulated hour.
	PresenceRate float64 // default 4; negative: none

	// Settle is simulated time after the workload for deliveries to finish
	// (queued and stored messages, churned nodes back); default 10 min.
	Settle time.Duration
	// ConnLow and ConnHigh cap connections per node; default 8 and 16.
	ConnLow, ConnHigh int
	// Republish is how often each node stores its presence record again
	// (default node.DefaultRepublish, 15 min); records live twice as
	// long, as by default.
	Republish time.Duration
	// JoinOver is how long the nodes take to join, one after another, each
	// adding its contacts among those already up as it joins (default 50 ms
	// per node). The workload's clock starts when the last has joined: a
	// swarm grows; it does not appear at once.
	JoinOver time.Duration
}

func (s Scenario) withDefaults() Scenario {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if s.Nodes == 0 {
		s.Nodes = 50
	}
	def(&s.Duration, 10*time.Minute)
	def(&s.ServerLatency, 10*time.Millisecond)
	def(&s.ClientLatency, 40*time.Millisecond)
	def(&s.Downtime, 3*time.Minute)
	def(&s.Settle, 10*time.Minute)
	def(&s.Tick, time.Millisecond)
	def(&s.Republish, node.DefaultRepublish)
	if s.ClientShare == 0 {
		s.ClientShare = 0.8
	}
	if s.ServerBandwidth == 0 {
		s.ServerBandwidth = 100_000_000
	}
	if s.ClientBandwidth == 0 {
		s.ClientBandwidth = 20_000_000
	}
	if s.Churn == 0 {
		s.Churn = 0.1
	}
	if s.PartitionFor > 0 && s.PartitionShare == 0 {
		s.PartitionShare = 0.5
	}
	if s.MessageRate == 0 {
		s.MessageRate = 30
	}
	if s.Contacts == 0 {
		s.Contacts = 5
	}
	if s.PresenceRate == 0 {
		s.PresenceRate = 4
	}
	if s.ConnLow == 0 {
		s.ConnLow, s.ConnHigh = 8, 16
	}
	def(&s.JoinOver, time.Duration(s.Nodes)*50*time.Millisecond)
	for _, v := range []*float64{&s.ClientShare, &s.Churn, &s.MessageRate, &s.PresenceRate} {
		*v = max(*v, 0) // negative: none
	}
	s.Tick = max(s.Tick, 0) // negative: exact
	return s
}

// Validate says what is wrong with a scenario, in the user's terms.
func (s Scenario) Validate() error {
	s = s.withDefaults()
	switch {
	case s.Nodes < 4 || s.Nodes > 5000:
		return fmt.Errorf("nodes %d: use 4 to 5000", s.Nodes)
	case s.ClientShare > 0.95:
		return errors.New("client share must be between 0 and 0.95: someone must serve the DHT")
	case s.Churn > 1:
		return errors.New("churn is a share of nodes, between 0 and 1")
	case s.PartitionShare < 0 || s.PartitionShare >= 1:
		return errors.New("partition share must be between 0 and 1")
	case s.Contacts < 1 || s.Contacts >= s.Nodes:
		return fmt.Errorf("contacts %d: use 1 to %d", s.Contacts, s.Nodes-1)
	case s.Republish < time.Minute || s.Republish > 8*time.Hour:
		return fmt.Errorf("republish %v: use 1m to 8h", s.Republish)
	case s.Tick > 10*time.Millisecond:
		return fmt.Errorf("tick %v: use 0 (exact) to 10ms", s.Tick)
	case s.JoinOver < 0 || s.JoinOver > time.Hour:
		return fmt.Errorf("join time %v: use 0 to 1h", s.JoinOver)
	case s.ConnLow < 2 || s.ConnHigh < s.ConnLow:
		return errors.New("connection caps: low at least 2, high at least low")
	}
	return nil
}

// Plan is everything the seed decides: who is a client, who knows whom,
// and every event. Two runs with one seed run the same plan.
type Plan struct {
	Scenario Scenario `json:"scenario"`
	Client   []bool   `json:"client"`
	Contacts [][]int  `json:"contacts"`
	Events   []Event  `json:"events"`
	Side     []bool   `json:"side,omitempty"` // partition: true for the minority side
}

// EventKind is what happens at an event.
type EventKind string

// The event kinds of a plan.
const (
	Send   EventKind = "send"   // From writes to To
	Leave  EventKind = "leave"  // Node stops
	Rejoin EventKind = "rejoin" // Node starts again with its store
	Status EventKind = "status" // Node changes its status
	Cut    EventKind = "cut"    // the partition starts
	Heal   EventKind = "heal"   // the partition ends
)

// Event is one step of a plan, at simulated time At after the start.
type Event struct {
	At   time.Duration `json:"at"`
	Kind EventKind     `json:"kind"`
	Node int           `json:"node,omitempty"`
	To   int           `json:"to,omitempty"`
	Text string        `json:"text,omitempty"`
}

// NewPlan draws the plan of a scenario from its seed.
func NewPlan(sc Scenario) (*Plan, error) {
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	sc = sc.withDefaults()
	rng := rand.New(rand.NewPCG(sc.Seed, 0x9a7e1ec0ffee))
	n := sc.Nodes
	p := &Plan{Scenario: sc, Client: make([]bool, n), Contacts: make([][]int, n)}
	// Node 0 is the bootstrap server; the rest are clients with ClientShare.
	for i := 1; i < n; i++ {
		p.Client[i] = rng.Float64() < sc.ClientShare
	}
	for i := range n {
		seen := map[int]bool{i: true}
		for len(p.Contacts[i]) < sc.Contacts {
			j := rng.IntN(n)
			if !seen[j] {
				seen[j] = true
				p.Contacts[i] = append(p.Contacts[i], j)
			}
		}
		sort.Ints(p.Contacts[i])
	}
	hours := sc.Duration.Hours()
	poisson := func(rate float64, f func(at time.Duration)) {
		if rate <= 0 {
			return
		}
		for at := 0.0; ; {
			at += -math.Log(1-rng.Float64()) / rate // hours
			if at >= hours {
				return
			}
			f(time.Duration(at * float64(time.Hour)))
		}
	}
	// The first minute is for the swarm to form.
	warm := time.Minute
	for i := range n {
		poisson(sc.MessageRate, func(at time.Duration) {
			to := p.Contacts[i][rng.IntN(len(p.Contacts[i]))]
			p.Events = append(p.Events, Event{At: warm + at, Kind: Send, Node: i, To: to})
		})
		poisson(sc.PresenceRate, func(at time.Duration) {
			p.Events = append(p.Events, Event{At: warm + at, Kind: Status, Node: i, Text: []string{"online", "away", "busy"}[rng.IntN(3)]})
		})
	}
	// Churn: distinct nodes (never the bootstrap) leave once each.
	leavers := rng.Perm(n - 1)[:int(math.Round(sc.Churn*float64(n-1)))]
	for _, l := range leavers {
		at := warm + time.Duration(rng.Float64()*float64(sc.Duration))
		p.Events = append(p.Events, Event{At: at, Kind: Leave, Node: l + 1}, Event{At: at + sc.Downtime, Kind: Rejoin, Node: l + 1})
	}
	if sc.PartitionFor > 0 {
		p.Side = make([]bool, n)
		for i := 1; i < n; i++ {
			p.Side[i] = rng.Float64() < sc.PartitionShare
		}
		p.Events = append(p.Events, Event{At: warm + sc.PartitionAt, Kind: Cut}, Event{At: warm + sc.PartitionAt + sc.PartitionFor, Kind: Heal})
	}
	sort.SliceStable(p.Events, func(a, b int) bool { return p.Events[a].At < p.Events[b].At })
	for i := range p.Events {
		if p.Events[i].Kind == Send {
			p.Events[i].Text = fmt.Sprintf("m%d", i)
		}
	}
	return p, nil
}

// Digest names the plan: equal digests, equal scenarios.
func (p *Plan) Digest() string {
	raw, _ := json.Marshal(p)
	h := sha256.Sum256(raw)
	return hex.EncodeToString(h[:8])
}

// End is when the plan's last event happens, plus the settle time.
func (p *Plan) End() time.Duration {
	end := p.Scenario.Duration + time.Minute
	for _, e := range p.Events {
		end = max(end, e.At)
	}
	return end + p.Scenario.Settle
}
