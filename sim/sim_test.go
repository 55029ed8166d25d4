package sim

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-p2p/parley/node"
)

func run(t *testing.T, sc Scenario) *Result {
	t.Helper()
	plan, err := NewPlan(sc)
	if err != nil {
		t.Fatal(err)
	}
	var res *Result
	Prepare()
	synctest.Test(t, func(t *testing.T) {
		res, err = Run(context.Background(), plan, Options{Dir: t.TempDir()})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("digest %s: %d nodes, %d/%d delivered, direct %+v, inbox %+v, notify %+v, resolve %.0f%% %+v, %.1f MB and %.0f goroutines per node, %v simulated in %v",
		res.Digest, res.Nodes, res.Delivered, res.Sent, res.Direct, res.Inbox, res.Notify, 100*res.ResolveSuccess, res.Resolve,
		res.MemPerNode/1e6, res.GoroutinesNode, res.Simulated.Round(time.Second), res.Wall.Round(time.Millisecond))
	return res
}

func TestSmallSwarm(t *testing.T) {
	res := run(t, Scenario{Nodes: 12, Seed: 1, Duration: 3 * time.Minute, Churn: 0.2})
	if res.Sent == 0 {
		t.Fatal("the workload sent nothing")
	}
	if res.Delivered != res.Sent || res.ShownTwice != 0 {
		t.Fatalf("delivered %d of %d, %d shown twice", res.Delivered, res.Sent, res.ShownTwice)
	}
}

func TestChurn50(t *testing.T) {
	res := run(t, Scenario{Nodes: 50, Seed: 7, Duration: 5 * time.Minute, Churn: 0.1})
	if res.Sent < 50 {
		t.Fatalf("the workload sent only %d messages", res.Sent)
	}
	if res.Delivered != res.Sent || res.ShownTwice != 0 {
		t.Fatalf("delivered %d of %d, %d shown twice", res.Delivered, res.Sent, res.ShownTwice)
	}
	if res.Inbox.N == 0 {
		t.Fatal("no message went through replicas: churn left no recipient offline")
	}
}

func TestPartitionThenHeal(t *testing.T) {
	sc := Scenario{Nodes: 24, Seed: 3, Duration: 6 * time.Minute, Churn: 0.01,
		PartitionAt: time.Minute, PartitionFor: 3 * time.Minute, MessageRate: 60}
	plan, _ := NewPlan(sc)
	across := 0
	for _, e := range plan.Events {
		cutAt, healAt := time.Minute+sc.PartitionAt, time.Minute+sc.PartitionAt+sc.PartitionFor
		if e.Kind == Send && e.At >= cutAt && e.At < healAt && plan.Side[e.Node] != plan.Side[e.To] {
			across++
		}
	}
	if across == 0 {
		t.Fatal("the plan sends nothing across the cut: pick another seed")
	}
	res := run(t, sc)
	if res.Delivered != res.Sent || res.ShownTwice != 0 {
		t.Fatalf("after healing: delivered %d of %d (%d sent across the cut), %d shown twice", res.Delivered, res.Sent, across, res.ShownTwice)
	}
	t.Logf("%d messages were sent across the cut while it lasted; all arrived", across)
}

func TestSeedFixesTheScenario(t *testing.T) {
	sc := Scenario{Nodes: 30, Seed: 42, Duration: 20 * time.Minute, Churn: 0.2, PartitionAt: time.Minute, PartitionFor: time.Minute}
	a, _ := NewPlan(sc)
	b, _ := NewPlan(sc)
	if a.Digest() != b.Digest() {
		t.Fatalf("one seed, two digests: %s %s", a.Digest(), b.Digest())
	}
	sc.Seed = 43
	c, _ := NewPlan(sc)
	if c.Digest() == a.Digest() {
		t.Fatal("another seed, the same digest")
	}
	if identityFor(42, 3).ID() != identityFor(42, 3).ID() || identityFor(42, 3).ID() == identityFor(43, 3).ID() {
		t.Fatal("identities do not follow the seed")
	}
	// Two runs of one small plan: scheduling differs, the invariants hold
	// in both.
	small := Scenario{Nodes: 10, Seed: 5, Duration: 2 * time.Minute, Churn: 0.2}
	r1, r2 := run(t, small), run(t, small)
	if r1.Digest != r2.Digest {
		t.Fatal("runs of one plan report different digests")
	}
	for _, r := range []*Result{r1, r2} {
		if r.Delivered != r.Sent || r.ShownTwice != 0 {
			t.Fatalf("run: delivered %d of %d, %d twice", r.Delivered, r.Sent, r.ShownTwice)
		}
	}
}

// TestNoneIsNone: a negative share or rate means none (zero takes the
// default), so a scenario can leave out churn, messages or clients.
func TestNoneIsNone(t *testing.T) {
	count := func(p *Plan) map[EventKind]int {
		n := map[EventKind]int{}
		for _, e := range p.Events {
			n[e.Kind]++
		}
		return n
	}
	def, err := NewPlan(Scenario{Nodes: 40, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(def); n[Leave] == 0 || n[Send] == 0 || n[Status] == 0 {
		t.Fatalf("the defaults give no churn, messages or status changes: %v", n)
	}
	none, err := NewPlan(Scenario{Nodes: 40, Seed: 3, Churn: -1, MessageRate: -1, PresenceRate: -1, ClientShare: -1})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(none); n[Leave] != 0 || n[Send] != 0 || n[Status] != 0 {
		t.Fatalf("none asked for, got %v", n)
	}
	for i, c := range none.Client {
		if c {
			t.Fatalf("node %d is a client with a client share of none", i)
		}
	}
}

func TestBadScenario(t *testing.T) {
	for _, sc := range []Scenario{{Nodes: 2}, {Nodes: 10, ClientShare: 1}, {Nodes: 10, Contacts: 10}, {Nodes: 10, Churn: 2}, {Nodes: 10, Tick: time.Second}, {Nodes: 10, Republish: time.Second}} {
		if _, err := NewPlan(sc); err == nil {
			t.Errorf("scenario %+v accepted", sc)
		}
	}
}

// TestInboxReturn measures a returning recipient against the floor of one
// replica lookup and one fetch, over simulated links (a benchmark figure,
// logged; the test itself checks only that nothing is lost).
func TestInboxReturn(t *testing.T) {
	plan, err := NewPlan(Scenario{Nodes: 30, Seed: 11, MessageRate: 1, PresenceRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	Prepare()
	var res *Return
	synctest.Test(t, func(t *testing.T) {
		res, err = MeasureReturn(context.Background(), plan, 12, 20)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("return → 20 messages shown: %+v; lookup + fetch: %+v; p50 ratio %.2f", res.Return, res.Floor, res.Ratio)
	if res.Lost != 0 {
		t.Fatalf("%d messages did not arrive", res.Lost)
	}
}

// TestRecordLifetime: records outlive their republish interval as long as
// by default, over the whole range of intervals a scenario takes.
func TestRecordLifetime(t *testing.T) {
	ratio := float64(node.DefaultLifetime) / float64(node.DefaultRepublish)
	for _, r := range []time.Duration{time.Minute, node.DefaultRepublish, 15 * time.Minute, 8 * time.Hour} {
		got := recordLifetime(r)
		if want := time.Duration(ratio * float64(r)); got != want || got <= r {
			t.Errorf("republish every %v: records live %v, want %v", r, got, want)
		}
	}
}
