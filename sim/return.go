package sim

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/parley-p2p/parley/api"
)

// Return is how fast a returning recipient gets what waited for it, next
// to the floor: one lookup of its replicas and one fetch round trip.
type Return struct {
	Rounds   int     `json:"rounds"`
	Messages int     `json:"messages_per_round"`
	Return   Latency `json:"return_to_delivered"` // from the node being back in the swarm to the last message shown
	Floor    Latency `json:"lookup_plus_fetch"`
	Ratio    float64 `json:"p50_ratio"`
	Lost     int     `json:"lost"`
}

// MeasureReturn runs plan's swarm without its workload and, rounds times,
// takes a node offline, has a contact leave it msgs messages (stored at
// replicas), brings it back, and times the delivery. Run it inside a
// synctest bubble, like Run.
func MeasureReturn(ctx context.Context, plan *Plan, rounds, msgs int) (*Return, error) {
	dir, err := os.MkdirTemp("", "parley-sim-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	quiet := *plan
	quiet.Events = nil
	w, stop, err := newWorld(ctx, &quiet, Options{Dir: dir})
	if err != nil {
		return nil, err
	}
	defer stop()
	res := &Return{Rounds: rounds, Messages: msgs}
	var back, floor []time.Duration
	n := plan.Scenario.Nodes
	for r := range rounds {
		bob := 1 + (r*7)%(n-1)
		alice := plan.Contacts[bob][0]
		if alice == 0 || alice == bob {
			alice = plan.Contacts[bob][len(plan.Contacts[bob])-1]
		}
		w.stop(bob)
		for i := range msgs {
			m, err := w.up(alice).Send(ctx, api.SendRequest{To: w.ids[bob].ID().String(), Text: fmt.Sprintf("r%d-%d", r, i), WaitMillis: 120_000})
			if err != nil || m.State != "stored" {
				return nil, fmt.Errorf("sim: round %d: message %d is %s (%v)", r, i, m.State, err)
			}
		}
		// Let the replicas settle, then bring bob back and time it.
		time.Sleep(time.Minute)
		got := make(chan struct{}, msgs)
		w.mu.Lock()
		w.onShown = func(node int, text string) {
			if node == bob && len(text) > 0 && text[0] == 'r' {
				got <- struct{}{}
			}
		}
		w.mu.Unlock()
		if err := w.start(bob); err != nil {
			return nil, err
		}
		start := time.Now()
		timeout := time.After(10 * time.Minute)
		seen := 0
	wait:
		for seen < msgs {
			select {
			case <-got:
				seen++
			case <-timeout:
				break wait
			}
		}
		w.mu.Lock()
		w.onShown = nil
		w.mu.Unlock()
		res.Lost += msgs - seen
		back = append(back, time.Since(start))
		if d, err := w.up(bob).InboxRoundTrip(ctx); err == nil {
			floor = append(floor, d)
		}
	}
	res.Return, _ = summarize(slices.Clone(back))
	res.Floor, _ = summarize(slices.Clone(floor))
	if res.Floor.P50 > 0 {
		res.Ratio = res.Return.P50 / res.Floor.P50
	}
	return res, nil
}
