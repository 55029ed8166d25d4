package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/api"
)

func newSend(g *globals) *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "send PEER TEXT",
		Short: "Send a text to a peer (a contact's name or a peer ID)",
		Long: "Send a text to a peer. Prints 'delivered <msg-id>' once the peer acknowledged it;\n" +
			"'stored <msg-id> n/r' when the peer is offline and n of r replica peers hold the\n" +
			"message for it; 'queued <msg-id>' when neither worked yet (the node keeps trying);\n" +
			"or 'failed: <reason>'.",
		Args: exactArgs(2, "send [--home DIR] PEER TEXT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dial(g)
			if err != nil {
				return err
			}
			m, err := c.Send(cmd.Context(), api.SendRequest{To: args[0], Text: args[1], WaitMillis: int(wait.Milliseconds())})
			if err != nil {
				return err
			}
			switch m.State {
			case "failed":
				return fmt.Errorf("failed: %s", m.Reason)
			case "stored":
				fmt.Fprintf(cmd.OutOrStdout(), "stored %s %d/%d\n", m.ID, m.Replicas, m.Of)
			default:
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", m.State, m.ID)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 0, "how long to wait for delivery before answering 'queued' (default 5s)")
	return cmd
}

func newHistory(g *globals) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "history PEER",
		Short: "Show the conversation with a peer, oldest first",
		Args:  exactArgs(1, "history [--home DIR] PEER [--json]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dial(g)
			if err != nil {
				return err
			}
			ms, err := c.History(cmd.Context(), args[0], limit)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json {
				return json.NewEncoder(w).Encode(ms)
			}
			if len(ms) == 0 {
				fmt.Fprintln(w, "(no messages yet)")
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			for _, m := range ms {
				arrow, state := "<-", ""
				if m.Direction == "out" {
					arrow, state = "->", m.State
					if m.State == "stored" {
						state += fmt.Sprintf(" %d/%d", m.Replicas, m.Of)
					}
					if m.Reason != "" {
						state += " (" + m.Reason + ")"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", shortTime(m.SentAt), arrow, oneLine(m.Text), state)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON")
	cmd.Flags().IntVar(&limit, "limit", 0, "show only the last N messages")
	return cmd
}

func newOutbox(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "outbox",
		Short: "List messages not yet delivered",
		Args:  exactArgs(0, "outbox [--home DIR] [--json]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dial(g)
			if err != nil {
				return err
			}
			ms, err := c.Outbox(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json {
				return json.NewEncoder(w).Encode(ms)
			}
			if len(ms) == 0 {
				fmt.Fprintln(w, "(the outbox is empty: everything was delivered)")
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			for _, m := range ms {
				to := m.Name
				if to == "" {
					to = m.Peer
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.ID, shortTime(m.SentAt), to, oneLine(m.Text))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON")
	return cmd
}

func newInbox(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inbox",
		Short: "Show what this node holds for others as a replica, and what waits in its outbox",
		Args:  exactArgs(0, "inbox [--home DIR] [--json]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dial(g)
			if err != nil {
				return err
			}
			v, err := c.Inbox(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json {
				return json.NewEncoder(w).Encode(v)
			}
			fmt.Fprintln(w, "Held here for others (sealed: contents and senders unknown to this node):")
			if len(v.Holdings) == 0 {
				fmt.Fprintln(w, "  (nothing)")
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			for _, h := range v.Holdings {
				fmt.Fprintf(tw, "  %s\t%d item(s)\t%d bytes\n", h.Recipient, h.Items, h.Bytes)
			}
			tw.Flush()
			fmt.Fprintln(w, "Waiting in the outbox:")
			if len(v.Outbox) == 0 {
				fmt.Fprintln(w, "  (nothing)")
			}
			for _, m := range v.Outbox {
				to := m.Name
				if to == "" {
					to = m.Peer
				}
				state := m.State
				if m.State == "stored" {
					state += fmt.Sprintf(" %d/%d", m.Replicas, m.Of)
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", m.ID, to, state, oneLine(m.Text))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON")
	return cmd
}

func newEvents(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "events",
		Short: "Print live events (incoming messages, delivery states) until interrupted",
		Args:  exactArgs(0, "events [--home DIR]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dial(g)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			return c.Events(cmd.Context(), func(e api.Event) { _ = enc.Encode(e) })
		},
	}
}

func shortTime(rfc string) string {
	t, err := time.Parse(time.RFC3339Nano, rfc)
	if err != nil {
		return rfc
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ⏎ ") }
