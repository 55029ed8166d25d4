package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/api"
)

func newContacts(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "contacts",
		Short: "Manage contacts: the petnames you give peers",
		Args:  exactArgs(0, "contacts add|list|remove …"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return listContacts(cmd, g)
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List contacts",
		Args:  exactArgs(0, "contacts list [--json]"),
		RunE:  func(cmd *cobra.Command, args []string) error { return listContacts(cmd, g) },
	}
	list.Flags().BoolVar(&g.json, "json", false, "print JSON")
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON")
	add := &cobra.Command{
		Use:   "add PEER NAME",
		Short: "Give a peer a petname (PEER: its ID, or a line of its 'parley id' to reach it without a lookup)",
		Args:  exactArgs(2, "contacts add PEER NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dial(g)
			if err != nil {
				return err
			}
			ct, err := c.AddContact(cmd.Context(), api.Contact{ID: args[0], Name: args[1]})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added %s as %s\n", ct.ID, ct.Name)
			return nil
		},
	}
	for _, acc := range []struct{ name, short string }{
		{"allow", "Let a contact see your presence (needed in allowlist mode; undoes deny)"},
		{"deny", "Hide your presence from a peer: it sees you offline, whatever the mode"},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:   acc.name + " PEER",
			Short: acc.short,
			Args:  exactArgs(1, "contacts "+acc.name+" PEER"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := dial(g)
				if err != nil {
					return err
				}
				if err := c.SetAccess(cmd.Context(), args[0], acc.name); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", pastTense[acc.name], args[0])
				return nil
			},
		})
	}
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Forget a petname (the conversation's history stays)",
		Args:  exactArgs(1, "contacts remove NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dial(g)
			if err != nil {
				return err
			}
			if err := c.RemoveContact(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(add, list, remove)
	return cmd
}

func listContacts(cmd *cobra.Command, g *globals) error {
	c, err := dial(g)
	if err != nil {
		return err
	}
	cs, err := c.Contacts(cmd.Context())
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if g.json {
		return json.NewEncoder(w).Encode(cs)
	}
	if len(cs) == 0 {
		fmt.Fprintln(w, "(no contacts yet: add one with 'parley contacts add PEER NAME')")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, ct := range cs {
		extra := ""
		if ct.Access != "" {
			extra = "(" + ct.Access + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ct.Name, describe(ct.Presence), ct.ID, extra)
	}
	return tw.Flush()
}
