package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/node"
)

func newDemo(g *globals) *cobra.Command {
	var keep, debug bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Tell Parley's story on a real loopback swarm: presence, hiding, direct and offline delivery",
		Args:  exactArgs(0, "demo"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := os.MkdirTemp("", "parley-demo-")
			if err != nil {
				return err
			}
			if keep {
				fmt.Fprintln(cmd.OutOrStdout(), "homes kept in", dir)
			} else {
				defer os.RemoveAll(dir)
			}
			d := &demo{ctx: cmd.Context(), w: cmd.OutOrStdout(), dir: dir, nodes: map[string]*node.Node{}, log: slog.New(slog.DiscardHandler)}
			if debug {
				d.log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelDebug}))
			}
			defer d.closeAll()
			start := time.Now()
			if err := d.run(); err != nil {
				return fmt.Errorf("demo: %w", err)
			}
			fmt.Fprintf(d.w, "\nAll steps passed in %v.\n", time.Since(start).Round(100*time.Millisecond))
			return nil
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the demo nodes' homes afterwards")
	cmd.Flags().BoolVar(&debug, "debug", false, "log what the nodes do, on stderr")
	return cmd
}

// demo is the story: four people and three helper nodes, each a real
// Parley node on 127.0.0.1.
type demo struct {
	log   *slog.Logger
	ctx   context.Context
	w     io.Writer
	dir   string
	boot  string
	nodes map[string]*node.Node
	step  int
}

var people = []string{"alice", "bob", "oscar", "alex"}

func (d *demo) say(format string, a ...any) {
	d.step++
	fmt.Fprintf(d.w, "\n%d. "+format+"\n", append([]any{d.step}, a...)...)
}

func (d *demo) ok(format string, a ...any) { fmt.Fprintf(d.w, "   ✓ "+format+"\n", a...) }

// start runs (or runs again) name's node, with its home kept across runs.
func (d *demo) start(name string) (*node.Node, error) {
	home := filepath.Join(d.dir, name)
	if _, err := identity.Load(home); err != nil {
		if _, err := identity.Create(home); err != nil {
			return nil, err
		}
	}
	cfg := node.Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: d.log.With("node", name)}
	if d.boot != "" {
		cfg.Bootstrap = []string{d.boot}
	}
	cfg.Presence.Retry = time.Second
	n, err := node.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := n.Start(d.ctx); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if d.boot == "" {
		d.boot = n.Addrs()[0].String()
	}
	d.nodes[name] = n
	return n, nil
}

func (d *demo) stop(name string) {
	if n := d.nodes[name]; n != nil {
		n.Close()
		delete(d.nodes, name)
	}
}

func (d *demo) closeAll() {
	for name := range d.nodes {
		d.stop(name)
	}
}

// until polls cond for up to 90 s (a loaded machine, or a receipt that
// waits for the next inbox collection, takes longer than the usual second).
func (d *demo) until(what string, cond func() bool) error {
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) || d.ctx.Err() != nil {
			return fmt.Errorf("%s did not happen within 90 s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func (d *demo) sees(who, whom, status string) bool {
	p, err := d.nodes[who].Whois(d.ctx, whom)
	return err == nil && p.Status == status
}

func (d *demo) run() error {
	d.say("Starting a swarm on 127.0.0.1: three helper nodes and alice, bob, oscar and alex.")
	for _, name := range []string{"helper1", "helper2", "helper3"} {
		if _, err := d.start(name); err != nil {
			return err
		}
	}
	for _, name := range people {
		n, err := d.start(name)
		if err != nil {
			return err
		}
		d.ok("%-5s is %s", name, n.ID())
	}

	d.say("Everyone adds everyone as a contact; each node publishes a signed presence record and watches its contacts.")
	for _, a := range people {
		for _, b := range people {
			if a != b {
				if _, err := d.nodes[a].AddContact(d.ctx, api.Contact{Name: b, ID: d.nodes[b].ID().String()}); err != nil {
					return err
				}
			}
		}
	}
	for _, a := range people {
		for _, b := range people {
			if a != b {
				if err := d.until(a+" seeing "+b+" online", func() bool { return d.sees(a, b, "online") }); err != nil {
					return err
				}
			}
		}
	}
	d.ok("all four see each other online")

	d.say("oscar hides from alex: 'parley contacts deny alex'.")
	if err := d.nodes["oscar"].SetAccess(d.ctx, "alex", "deny"); err != nil {
		return err
	}
	if _, err := d.nodes["oscar"].SetStatus(d.ctx, api.StatusRequest{Status: "busy", Note: "writing the report"}); err != nil {
		return err
	}
	if err := d.until("bob seeing oscar busy", func() bool { return d.sees("bob", "oscar", "busy") }); err != nil {
		return err
	}
	if err := d.until("alex seeing oscar offline", func() bool { return d.sees("alex", "oscar", "offline") }); err != nil {
		p, _ := d.nodes["alex"].Whois(d.ctx, "oscar")
		return fmt.Errorf("%w (alex sees %s %q, seq %d, via %s)", err, p.Status, p.Note, p.Seq, p.Source)
	}
	d.ok("bob sees oscar: busy — writing the report")
	d.ok("alex sees oscar: offline (oscar's record is sealed with a key alex no longer holds, and oscar refuses alex's connections)")

	d.say("alice writes to bob, who is online: the message goes directly, end-to-end encrypted.")
	start := time.Now()
	m, err := d.nodes["alice"].Send(d.ctx, api.SendRequest{To: "bob", Text: "lunch at noon?"})
	if err != nil {
		return err
	}
	if m.State != "delivered" {
		return fmt.Errorf("alice's message is %s, not delivered", m.State)
	}
	d.ok("delivered and acknowledged in %v (bob stored it before acknowledging)", time.Since(start).Round(10*time.Microsecond))

	d.say("bob goes offline; alice writes to him again.")
	d.stop("bob")
	m, err = d.nodes["alice"].Send(d.ctx, api.SendRequest{To: "bob", Text: "see you tomorrow then"})
	if err != nil {
		return err
	}
	if m.State != "stored" {
		return fmt.Errorf("the message to offline bob is %s, not stored", m.State)
	}
	d.ok("stored %d/%d: left with the replica peers closest to bob's inbox key, sealed so they see neither sender nor text", m.Replicas, m.Of)

	d.say("alice goes offline too.")
	d.stop("alice")
	d.ok("neither alice nor bob is online; only the replicas hold the message")

	d.say("bob comes back.")
	if _, err := d.start("bob"); err != nil {
		return err
	}
	var got []api.Message
	if err := d.until("bob receiving the stored message", func() bool {
		got, _ = d.nodes["bob"].History(d.ctx, "alice", 0) // reading it, too
		return len(got) == 2 && got[1].Text == "see you tomorrow then"
	}); err != nil {
		return err
	}
	d.ok("bob fetched it from the replicas: %q (and read it)", got[1].Text)

	d.say("alice comes back.")
	if _, err := d.start("alice"); err != nil {
		return err
	}
	if err := d.until("alice seeing her message read", func() bool {
		h, _ := d.nodes["alice"].History(d.ctx, "bob", 0)
		return len(h) == 2 && h[1].State == "read"
	}); err != nil {
		h, _ := d.nodes["alice"].History(d.ctx, "bob", 0)
		for _, m := range h {
			err = fmt.Errorf("%w; %q is %s", err, m.Text, m.State)
		}
		return err
	}
	d.ok("alice sees 'see you tomorrow then' delivered and read: bob's receipts waited for her at the replicas")
	return nil
}
