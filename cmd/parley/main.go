// Command parley is the Parley messenger: `parley run` is the node daemon,
// and the other commands talk to it through its local API.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/api/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley:", oneLineError(err))
		os.Exit(1)
	}
}

// oneLineError folds a multi-line error (libp2p lists every failed dial on
// its own line) into the single line the CLI promises.
func oneLineError(err error) string {
	var b strings.Builder
	for _, l := range strings.Split(err.Error(), "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "* "))
		if l == "" {
			continue
		}
		if b.Len() > 0 {
			if s := b.String(); strings.HasSuffix(s, "?") || strings.HasSuffix(s, ":") {
				b.WriteString(" ")
			} else {
				b.WriteString("; ")
			}
		}
		b.WriteString(l)
	}
	return b.String()
}

// globals are the flags every command shares.
type globals struct {
	home string
	json bool
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "parley",
		Short:         "A peer-to-peer instant messenger with no central server",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if g.home == "" {
				g.home = defaultHome()
			}
			abs, err := filepath.Abs(g.home)
			if err != nil {
				return err
			}
			g.home = abs
			return nil
		},
	}
	root.PersistentFlags().StringVar(&g.home, "home", "", "the node's home directory (default $PARLEY_HOME, else ~/.parley)")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%w (see 'parley %s --help')", err, cmd.Name())
	})
	root.AddCommand(
		newInit(g), newID(g), newRun(g), newSend(g), newHistory(g),
		newContacts(g), newOutbox(g), newEvents(g), newDemo(g),
		newStatus(g), newWhois(g), newVisibility(g), newRequests(g), newInbox(g),
		newSwarm(g), newSim(g),
	)
	return root
}

func defaultHome() string {
	if h := os.Getenv("PARLEY_HOME"); h != "" {
		return h
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".parley")
	}
	return ".parley"
}

// exactArgs is cobra.ExactArgs with a message that says what to type.
func exactArgs(n int, usage string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("usage: parley %s (got %d arguments, want %d)", usage, len(args), n)
		}
		return nil
	}
}

func dial(g *globals) (*client.Client, error) {
	c, err := client.New(g.home)
	if errors.Is(err, client.ErrNoDaemon) {
		return nil, err
	}
	return c, err
}
