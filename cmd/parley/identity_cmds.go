package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/api/client"
	"github.com/parley-p2p/parley/identity"
)

func newInit(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "init",
		Short: "Create this node's identity and print its peer ID",
		Args:  exactArgs(0, "init [--home DIR]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := identity.Create(g.home)
			if errors.Is(err, identity.ErrExists) {
				if old, lerr := identity.Load(g.home); lerr == nil {
					return fmt.Errorf("%s already has an identity, %s; nothing changed", g.home, old.ID())
				}
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), id.ID())
			return nil
		},
	}
}

func newID(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "id",
		Short: "Print this node's peer ID and, while it runs, its listen addresses",
		Args:  exactArgs(0, "id [--home DIR] [--json]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out api.Identity
			c, err := client.New(g.home)
			if err == nil {
				out, err = c.Identity(cmd.Context())
			}
			if err != nil {
				if !errors.Is(err, client.ErrNoDaemon) {
					return err
				}
				// Not running: the peer ID is still known from the key.
				id, lerr := identity.Load(g.home)
				if lerr != nil {
					return lerr
				}
				out = api.Identity{ID: id.ID().String(), Addrs: []string{}}
			}
			w := cmd.OutOrStdout()
			if g.json {
				return json.NewEncoder(w).Encode(out)
			}
			fmt.Fprintln(w, out.ID)
			for _, a := range out.Addrs {
				fmt.Fprintln(w, " ", a)
			}
			if len(out.Addrs) == 0 {
				fmt.Fprintln(os.Stderr, "(the node is not running, so it has no listen addresses)")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON: {\"id\":…, \"addrs\":[…]}")
	return cmd
}
