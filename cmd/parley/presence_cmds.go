package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/api"
)

func newStatus(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show your status, or set it with 'status set'",
		Args:  exactArgs(0, "status [--json] | status set online|away|busy|invisible [--note TEXT]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dial(g)
			if err != nil {
				return err
			}
			st, err := c.MyStatus(cmd.Context())
			if err != nil {
				return err
			}
			return printMyStatus(cmd.OutOrStdout(), st, g.json)
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON")
	var note string
	set := &cobra.Command{
		Use:   "set online|away|busy|invisible",
		Short: "Set your status (invisible: everyone sees you offline) and note",
		Args:  exactArgs(1, "status set online|away|busy|invisible [--note TEXT]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dial(g)
			if err != nil {
				return err
			}
			st, err := c.SetStatus(cmd.Context(), api.StatusRequest{Status: args[0], Note: note})
			if err != nil {
				return err
			}
			return printMyStatus(cmd.OutOrStdout(), st, g.json)
		},
	}
	set.Flags().StringVar(&note, "note", "", "a short note shown with your status")
	set.Flags().BoolVar(&g.json, "json", false, "print JSON")
	cmd.AddCommand(set)
	return cmd
}

func printMyStatus(w io.Writer, st api.MyStatus, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(st)
	}
	line := st.Status
	if st.Note != "" {
		line += " — " + st.Note
	}
	fmt.Fprintf(w, "%s (visible to: %s)\n", line, st.Visibility)
	if st.Published != "" {
		fmt.Fprintf(w, "record %d published %s, stored by %d of %d DHT peers; %d watching\n",
			st.Seq, ago(st.Published), st.Accepted, st.Asked, st.Watchers)
	} else {
		fmt.Fprintln(w, "not published yet")
	}
	return nil
}

func newWhois(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "whois PEER",
		Short: "Look up a peer's presence (status, note, addresses)",
		Args:  exactArgs(1, "whois [--home DIR] PEER [--json]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dial(g)
			if err != nil {
				return err
			}
			p, err := c.Whois(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json {
				return json.NewEncoder(w).Encode(p)
			}
			who := p.Peer
			if p.Name != "" {
				who = p.Name + " (" + p.Peer + ")"
			}
			fmt.Fprintf(w, "%s: %s\n", who, describe(&p))
			if p.Seq != 0 {
				fmt.Fprintf(w, "record %d, fetched %s via %s, expires %s\n", p.Seq, ago(p.Updated), p.Source, until(p.Expires))
			}
			for _, a := range p.Addrs {
				fmt.Fprintln(w, " ", a)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON")
	return cmd
}

func describe(p *api.Presence) string {
	if p == nil {
		return "offline"
	}
	s := p.Status
	if p.Note != "" {
		s += " — " + p.Note
	}
	return s
}

func newVisibility(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "visibility everyone|contacts|allowlist",
		Short: "Choose who may see your presence (default: contacts)",
		Long: "Choose who may see your presence. everyone: anyone who looks you up; contacts: your\n" +
			"contacts; allowlist: only contacts you allowed with 'parley contacts allow'. Whatever\n" +
			"the mode, a contact you denied with 'parley contacts deny' sees you offline.",
		Args: exactArgs(1, "visibility everyone|contacts|allowlist"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dial(g)
			if err != nil {
				return err
			}
			st, err := c.SetVisibility(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printMyStatus(cmd.OutOrStdout(), st, false)
		},
	}
}

func newRequests(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "requests",
		Short: "List contact requests: strangers who wrote to you",
		Args:  exactArgs(0, "requests [accept|deny|block PEER]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dial(g)
			if err != nil {
				return err
			}
			rs, err := c.Requests(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json {
				return json.NewEncoder(w).Encode(rs)
			}
			if len(rs) == 0 {
				fmt.Fprintln(w, "(no contact requests)")
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			for _, r := range rs {
				fmt.Fprintf(tw, "%s\t%d message(s)\tlast %s\n", r.Peer, r.Messages, ago(r.Last))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON")
	for _, action := range []struct{ name, short string }{
		{"accept", "Accept a request: the peer becomes a contact (named NAME, if given)"},
		{"deny", "Deny a request: the peer sees you offline and cannot reach you directly"},
		{"block", "Block a peer: no messages, no presence, no connection"},
	} {
		use := action.name + " PEER"
		if action.name == "accept" {
			use += " [NAME]"
		}
		cmd.AddCommand(&cobra.Command{
			Use:   use,
			Short: action.short,
			Args: func(cmd *cobra.Command, args []string) error {
				if len(args) < 1 || len(args) > 1 && action.name != "accept" || len(args) > 2 {
					return fmt.Errorf("usage: parley requests %s", use)
				}
				return nil
			},
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := dial(g)
				if err != nil {
					return err
				}
				name := ""
				if len(args) == 2 {
					name = args[1]
				}
				if err := c.AnswerRequest(cmd.Context(), args[0], action.name, name); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", pastTense[action.name], args[0])
				return nil
			},
		})
	}
	return cmd
}

var pastTense = map[string]string{"allow": "allowed", "deny": "denied", "accept": "accepted", "block": "blocked"}

func ago(rfc string) string {
	t, err := time.Parse(time.RFC3339Nano, rfc)
	if err != nil {
		return rfc
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func until(rfc string) string {
	t, err := time.Parse(time.RFC3339Nano, rfc)
	if err != nil {
		return rfc
	}
	return "in " + time.Until(t).Round(time.Second).String()
}
