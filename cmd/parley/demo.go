package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/node"
)

func newDemo(g *globals) *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Start two nodes on this machine and show messages going both ways",
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
			return runDemo(cmd.Context(), cmd.OutOrStdout(), dir)
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the demo nodes' homes afterwards")
	return cmd
}

// demoNode is one person of the demo with a real node on loopback.
type demoNode struct {
	name string
	*node.Node
}

func startDemoNode(ctx context.Context, dir, name string, bootstrap []string) (*demoNode, error) {
	home := filepath.Join(dir, name)
	if _, err := identity.Create(home); err != nil {
		return nil, err
	}
	n, err := node.New(node.Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}, Bootstrap: bootstrap})
	if err != nil {
		return nil, err
	}
	if err := n.Start(ctx); err != nil {
		return nil, err
	}
	return &demoNode{name: name, Node: n}, nil
}

func runDemo(ctx context.Context, w io.Writer, dir string) error {
	step := func(format string, a ...any) { fmt.Fprintf(w, "==> "+format+"\n", a...) }
	step("starting alice and bob: two real Parley nodes on 127.0.0.1")
	alice, err := startDemoNode(ctx, dir, "alice", nil)
	if err != nil {
		return fmt.Errorf("demo: start alice: %w", err)
	}
	defer alice.Close()
	bob, err := startDemoNode(ctx, dir, "bob", []string{alice.Addrs()[0].String()})
	if err != nil {
		return fmt.Errorf("demo: start bob: %w", err)
	}
	defer bob.Close()
	fmt.Fprintf(w, "    alice is %s\n    bob   is %s\n", alice.ID(), bob.ID())
	if _, err := alice.AddContact(ctx, api.Contact{Name: "bob", ID: bob.ID().String()}); err != nil {
		return err
	}
	if _, err := bob.AddContact(ctx, api.Contact{Name: "alice", ID: alice.ID().String()}); err != nil {
		return err
	}
	exchange := func(from, to *demoNode, text string) error {
		step("%s -> %s: %q", from.name, to.name, text)
		start := time.Now()
		m, err := from.Send(ctx, api.SendRequest{To: to.name, Text: text})
		if err != nil {
			return fmt.Errorf("demo: %s could not send: %w", from.name, err)
		}
		took := time.Since(start)
		if m.State != "delivered" {
			return fmt.Errorf("demo: %s's message is %s, not delivered: %s", from.name, m.State, m.Reason)
		}
		fmt.Fprintf(w, "    acknowledged by %s: %s after %v (end-to-end encrypted, stored on both sides)\n", to.name, m.ID, took.Round(10*time.Microsecond))
		hist, err := to.History(ctx, from.name, 1)
		if err != nil || len(hist) != 1 || hist[0].Text != text {
			return fmt.Errorf("demo: %s's history does not show the message (%v)", to.name, err)
		}
		fmt.Fprintf(w, "    %s's history: %q from %s\n", to.name, hist[0].Text, from.name)
		return nil
	}
	if err := exchange(alice, bob, "hi bob, this is alice"); err != nil {
		return err
	}
	if err := exchange(bob, alice, "hello alice, bob here"); err != nil {
		return err
	}
	step("demo finished: both messages delivered and acknowledged")
	return nil
}
