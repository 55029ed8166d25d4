package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/node"
	"github.com/parley-p2p/parley/sim"
)

// The simulator keeps within the memory goal of 5 MB per node (counted as
// the process's resident memory over the nodes) with a soft limit for the
// Go runtime, set above what a node needs once the swarm has formed (4.3
// to 4.5 MB resident at 1000 nodes): without it the heap may grow to twice
// what is live, and while a thousand nodes join (the live heap then peaks
// at 3.4 MB a node) that reached 5.5 MB a node. Only then does the
// collector run more often: the run pays in CPU rather than memory. The
// nodes' databases, mapped from files, come on top (about 0.15 MB a node).
const (
	simMemoryPerNode = 4_700_000
	simMemoryBase    = 32 << 20
)

func newSim(g *globals) *cobra.Command {
	var sc sim.Scenario
	var report string
	var runs int
	var cpuProfile, memProfile string
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Simulate a swarm of real Parley nodes in one process, in virtual time",
		Long: "Run N real Parley nodes over a simulated network in virtual time, with churn, an optional\n" +
			"partition, and a message and presence workload fixed by --seed. Prints the plan's digest,\n" +
			"a progress line on stderr, then the results (--json for machine-readable output;\n" +
			"--report FILE.html for a page with plots). The Go memory limit is set to 4.7 MB per node\n" +
			"(plus 32 MB) unless GOMEMLIMIT is. See docs/simulation.md.",
		Args: exactArgs(0, "sim [--nodes N] [--duration D] [--seed S] [--json] [--report FILE.html] …"),
		RunE: func(cmd *cobra.Command, args []string) error {
			// On the command line 0 means none (the Scenario's zero is
			// "the default", its negative "none").
			for _, v := range []struct {
				flag string
				v    *float64
			}{{"client-share", &sc.ClientShare}, {"churn", &sc.Churn}, {"rate", &sc.MessageRate}, {"presence-rate", &sc.PresenceRate}} {
				switch {
				case *v.v < 0:
					return fmt.Errorf("--%s %v: cannot be negative; use 0 for none", v.flag, *v.v)
				case *v.v == 0:
					*v.v = -1
				}
			}
			// The Scenario reads 0 as "the default": a 0 given here would
			// silently run something else than asked for.
			for _, v := range []struct {
				flag string
				zero bool
			}{
				{"nodes", sc.Nodes <= 0}, {"contacts", sc.Contacts <= 0}, {"conn-low", sc.ConnLow <= 0}, {"conn-high", sc.ConnHigh <= 0},
				{"duration", sc.Duration <= 0}, {"settle", sc.Settle <= 0}, {"latency", sc.ServerLatency <= 0},
				{"client-latency", sc.ClientLatency <= 0}, {"downtime", sc.Downtime <= 0}, {"republish", sc.Republish <= 0},
			} {
				if v.zero && cmd.Flags().Changed(v.flag) {
					return fmt.Errorf("--%s %s: must be more than 0", v.flag, cmd.Flags().Lookup(v.flag).Value)
				}
			}
			switch {
			case sc.Tick < 0:
				return fmt.Errorf("--tick %v: cannot be negative; use 0 for exact delivery times", sc.Tick)
			case sc.Tick == 0:
				sc.Tick = -1
			}
			plan, err := sim.NewPlan(sc)
			if err != nil {
				return fmt.Errorf("sim: %w", err)
			}
			if os.Getenv("GOMEMLIMIT") == "" {
				debug.SetMemoryLimit(simMemoryBase + int64(plan.Scenario.Nodes)*simMemoryPerNode)
			}
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			fmt.Fprintf(stderr, "plan %s: %d nodes, %d events, %v of workload\n", plan.Digest(), plan.Scenario.Nodes, len(plan.Events), plan.Scenario.Duration)
			if report != "" {
				f, err := os.Create(report)
				if err != nil {
					return err
				}
				f.Close()
			}
			if runs < 1 || runs > 20 {
				return fmt.Errorf("--runs %d: use 1 to 20", runs)
			}
			sim.Prepare()
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				// testing.Main exits the process: the profile is stopped
				// and written when the runs are done, before the results.
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer f.Close()
			}
			// Ctrl-C ends a simulation at once: there is nothing to save.
			signal.Reset(os.Interrupt, syscall.SIGTERM)
			return inBubbles(runs, func() (*sim.Result, error) {
				// A context from outside the bubble would stall virtual time
				// (waiting on it is not "durably blocked"): make one inside.
				opt := sim.Options{Progress: stderr}
				if memProfile != "" {
					opt.AtEnd = func() {
						if f, err := os.Create(memProfile); err == nil {
							runtime.GC()
							pprof.WriteHeapProfile(f)
							f.Close()
						}
						// Beside it, where the goroutines are, summed by stack.
						if f, err := os.Create(memProfile + ".goroutines"); err == nil {
							pprof.Lookup("goroutine").WriteTo(f, 1)
							f.Close()
						}
					}
				}
				return sim.Run(context.Background(), plan, opt)
			}, func(all []*sim.Result) error {
				pprof.StopCPUProfile()
				res := all[0]
				if report != "" {
					f, err := os.Create(report)
					if err != nil {
						return err
					}
					if err := sim.WriteReport(f, res); err != nil {
						f.Close()
						return err
					}
					if err := f.Close(); err != nil {
						return err
					}
				}
				if g.json {
					if len(all) == 1 {
						return json.NewEncoder(stdout).Encode(res)
					}
					return json.NewEncoder(stdout).Encode(map[string]any{"runs": all, "spread": sim.Spread(all)})
				}
				printSim(stdout, res)
				if len(all) > 1 {
					printSpread(stdout, sim.Spread(all))
				}
				for i, r := range all {
					if r.Delivered != r.Sent || r.ShownTwice > 0 {
						return fmt.Errorf("invariant broken in run %d: %d of %d delivered, %d shown twice", i+1, r.Delivered, r.Sent, r.ShownTwice)
					}
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&sc.Nodes, "nodes", 50, "how many nodes")
	f.DurationVar(&sc.Duration, "duration", 10*time.Minute, "simulated time of the workload")
	f.Uint64Var(&sc.Seed, "seed", 1, "fixes keys, topology, workload, churn and partitions")
	f.DurationVar(&sc.ServerLatency, "latency", 10*time.Millisecond, "round-trip latency of a server-class node's link")
	f.DurationVar(&sc.ClientLatency, "client-latency", 40*time.Millisecond, "round-trip latency of a client-class node's link")
	f.DurationVar(&sc.Tick, "tick", time.Millisecond, "deliver packets on a grid of this much simulated time (up to one tick late; fewer, fuller steps run faster); 0: exact")
	f.Float64Var(&sc.ClientShare, "client-share", 0.8, "share of nodes in DHT client mode (users behind NAT)")
	f.Float64Var(&sc.Churn, "churn", 0.1, "share of nodes that leave once and come back")
	f.DurationVar(&sc.Downtime, "downtime", 3*time.Minute, "how long a leaving node stays away")
	f.DurationVar(&sc.PartitionAt, "partition-at", 0, "when to cut the swarm in two (with --partition-for)")
	f.DurationVar(&sc.PartitionFor, "partition-for", 0, "how long the cut lasts (0: no partition)")
	f.Float64Var(&sc.MessageRate, "rate", 30, "messages per node per simulated hour")
	f.IntVar(&sc.Contacts, "contacts", 5, "contacts per node")
	f.Float64Var(&sc.PresenceRate, "presence-rate", 4, "status changes per node per simulated hour")
	f.DurationVar(&sc.JoinOver, "join-over", 0, "simulated time over which the nodes join, one after another (default 50ms per node)")
	f.IntVar(&sc.ConnLow, "conn-low", 8, "connections per node the connection manager trims down to (besides those kept for presence and those under 30 s old)")
	f.DurationVar(&sc.Republish, "republish", node.DefaultRepublish, "how often each node stores its presence record again (records live twice as long, as by default)")
	f.IntVar(&sc.ConnHigh, "conn-high", 16, "connections per node above which the connection manager trims")
	f.DurationVar(&sc.Settle, "settle", 10*time.Minute, "simulated time after the workload for deliveries to finish")
	f.BoolVar(&g.json, "json", false, "print the metrics as JSON")
	f.StringVar(&report, "report", "", "also write an HTML report with plots to this file (of the first run)")
	f.IntVar(&runs, "runs", 1, "run the same plan this many times and report the spread of each metric")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the runs to this file (go tool pprof)")
	f.StringVar(&memProfile, "memprofile", "", "write a heap profile to this file at the end of the run, nodes still up (and a goroutine summary to FILE.goroutines)")
	return cmd
}

// inBubbles runs the simulation n times, each inside a synctest bubble of
// its own so that it runs in virtual time, then hands the results to done.
// synctest.Test needs a *testing.T, which testing.Main provides; it ends the
// process with the outcome. The testing package's own "PASS"/"FAIL" lines go
// to /dev/null so that --json output stays clean.
func inBubbles(n int, run func() (*sim.Result, error), done func([]*sim.Result) error) error {
	out := os.Stdout
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	var failure error
	os.Args = []string{os.Args[0], "-test.run=^Simulation$"}
	os.Stdout = devnull
	testing.Main(func(pat, str string) (bool, error) { return true, nil }, []testing.InternalTest{{
		Name: "Simulation",
		F: func(t *testing.T) {
			var all []*sim.Result
			for i := 0; i < n && failure == nil; i++ {
				synctest.Test(t, func(t *testing.T) {
					var r *sim.Result
					if r, failure = run(); failure == nil {
						all = append(all, r)
					}
				})
			}
			if failure == nil {
				os.Stdout = out
				failure = done(all)
				os.Stdout = devnull
			}
			if failure != nil {
				fmt.Fprintln(os.Stderr, "parley:", oneLineError(failure))
				t.Fail()
			}
		},
	}}, nil, nil)
	return nil // not reached: testing.Main exits
}

func printSim(w io.Writer, r *sim.Result) {
	fmt.Fprintf(w, "plan %s: %d nodes, %v simulated in %v wall\n", r.Digest, r.Nodes, r.Simulated.Round(time.Second), r.Wall.Round(time.Millisecond))
	fmt.Fprintf(w, "delivered        %d of %d (%.1f %%), %d shown twice\n", r.Delivered, r.Sent, 100*r.Ratio, r.ShownTwice)
	fmt.Fprintf(w, "direct latency   p50 %.0f ms  p95 %.0f ms  p99 %.0f ms  (%d)\n", r.Direct.P50, r.Direct.P95, r.Direct.P99, r.Direct.N)
	fmt.Fprintf(w, "inbox latency    p50 %.0f ms  p95 %.0f ms  p99 %.0f ms  (%d)\n", r.Inbox.P50, r.Inbox.P95, r.Inbox.P99, r.Inbox.N)
	fmt.Fprintf(w, "presence resolve %.0f %% of %d, p50 %.0f ms\n", 100*r.ResolveSuccess, r.ResolveTries, r.Resolve.P50)
	fmt.Fprintf(w, "NOTIFY latency   p50 %.0f ms  p95 %.0f ms  (%d)\n", r.Notify.P50, r.Notify.P95, r.Notify.N)
	fmt.Fprintf(w, "per node         %.2f MB live heap+stack (median %.2f; %.2f MB resident), %.0f goroutines (median %.0f), %.0f open connections (median; %.0f kept), %.0f KB sent\n",
		r.MemPerNode/1e6, r.MemSteady/1e6, r.RSSPerNode/1e6, r.GoroutinesNode, r.GoroutinesSteady, r.ConnsSteady, r.KeptSteady, r.BytesPerNode/1e3)
	fmt.Fprintf(w, "time             %v simulated in %v wall, after joining (%v simulated, %v wall), and %v wall to stop\n",
		r.Simulated.Round(time.Second), (r.Wall - r.JoinWall - r.EndWall).Round(time.Second), r.Join.Round(time.Second), r.JoinWall.Round(time.Second), r.EndWall.Round(time.Second))
	fmt.Fprintf(w, "DHT per node-h   %.1f lookups (%.1f closest, %.1f value of which %.1f widened, %.1f peer), %.0f requests served (%.0f for routing), %.1f records handed on, %.0f connections\n", r.DHT.Lookups, r.DHT.Closest, r.DHT.Value, r.DHT.Widened, r.DHT.Peer, r.DHT.Served, r.DHT.ServedRouting, r.DHT.HandedOff, r.ConnsPerNodeHour)
	fmt.Fprintf(w, "replicas         at most %d items held at once\n", r.MaxHeldItems)
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

func printSpread(w io.Writer, s sim.SpreadSummary) {
	fmt.Fprintf(w, "\nover %d runs of the same plan (min – max):\n", s.Runs)
	for _, m := range s.Metrics {
		fmt.Fprintf(w, "  %-34s %10.1f – %-10.1f %s\n", m.Name, m.Min, m.Max, m.Unit)
	}
}
