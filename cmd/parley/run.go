package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/gologshim"
	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/node"
)

func newRun(g *globals) *cobra.Command {
	var listen, bootstrap []string
	var apiAddr, dhtMode, logLevel string
	var lifetime, republish time.Duration
	var readReceipts bool
	var inboxEvery time.Duration
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the node until interrupted (SIGINT or SIGTERM)",
		Args:  exactArgs(0, "run [--home DIR] [--listen MA,…] [--api HOST:PORT] [--bootstrap MA,…]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			// libp2p logs through its own slog shim: give it our handler, at
			// error unless debugging (its warnings repeat what our errors
			// say), and without the start-up framework's lines (a host that
			// cannot start is reported once, by us, in one line).
			libLevel := slog.LevelError
			if level <= slog.LevelDebug {
				libLevel = level
			}
			gologshim.SetDefaultHandler(quietFx{slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: libLevel}), false})
			if lifetime < time.Minute || republish <= 0 || republish >= lifetime {
				return fmt.Errorf("--presence-republish (%v) must be shorter than --presence-lifetime (%v), which must be at least 1m", republish, lifetime)
			}
			cfg := node.Config{Home: g.home, Listen: listen, Bootstrap: bootstrap, DHTMode: dhtMode, Logger: log}
			cfg.Presence.Lifetime, cfg.Presence.Republish = lifetime, republish
			cfg.Inbox.NoReadReceipts = !readReceipts
			if inboxEvery < time.Second {
				return fmt.Errorf("--inbox-interval %v is too short; use 1s or more", inboxEvery)
			}
			cfg.Inbox.Collect = inboxEvery
			if os.Getenv("PARLEY_CRASH_POINT") == "inbox-after-persist" {
				// For crash tests: die the hard way between persisting
				// fetched messages and deleting them at the replicas.
				cfg.Inbox.CrashAfterPersist = func() { syscall.Kill(os.Getpid(), syscall.SIGKILL) }
			}
			n, err := node.New(cfg)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := n.Start(ctx); err != nil {
				if strings.Contains(err.Error(), "address already in use") {
					return fmt.Errorf("%w; another program uses that port: pick another --listen port, or 0 to let the system choose", err)
				}
				return err
			}
			defer n.Close()
			srv, err := api.NewServer(apiAddr, n, log)
			if err != nil {
				return err
			}
			serveErr := make(chan error, 1)
			go func() { serveErr <- srv.Serve() }()
			defer func() {
				api.RemoveFiles(g.home)
				srv.Close()
				<-serveErr
			}()
			if err := srv.WriteFiles(g.home); err != nil {
				return err
			}
			id := n.Identity()
			log.Info("parley: node ready", "id", id.ID, "api", srv.URL())
			for _, a := range id.Addrs {
				log.Info("parley: listening", "addr", a)
			}
			select {
			case <-ctx.Done():
				log.Info("parley: shutting down")
				return nil
			case err := <-serveErr:
				serveErr <- err
				return fmt.Errorf("local API stopped: %w", err)
			}
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&listen, "listen", nil, "multiaddrs to listen on, comma-separated (default "+strings.Join(node.DefaultListen, ",")+")")
	f.StringSliceVar(&bootstrap, "bootstrap", nil, "multiaddrs of peers to join through, each ending in /p2p/<peer-id>")
	f.StringVar(&apiAddr, "api", "127.0.0.1:0", "address of the local API (loopback only; port 0 picks one)")
	f.StringVar(&dhtMode, "dht-mode", "server", "DHT mode: server, client or auto")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.DurationVar(&inboxEvery, "inbox-interval", 5*time.Minute, "how often to fetch messages waiting at replicas (also done on start, and when back in touch after losing every connection)")
	f.BoolVar(&readReceipts, "read-receipts", true, "tell senders when you have read their messages")
	f.DurationVar(&lifetime, "presence-lifetime", node.DefaultLifetime, "how long a published presence record is valid")
	f.DurationVar(&republish, "presence-republish", node.DefaultRepublish, "how often the presence record is published again")
	return cmd
}

// quietFx drops the log records of libp2p's dependency-injection framework
// (attribute system=fx), which only repeat errors that Start returns.
type quietFx struct {
	slog.Handler
	fx bool
}

func (q quietFx) Enabled(ctx context.Context, l slog.Level) bool {
	return !q.fx && q.Handler.Enabled(ctx, l)
}

func (q quietFx) WithAttrs(attrs []slog.Attr) slog.Handler {
	fx := q.fx
	for _, a := range attrs {
		fx = fx || a.Key == "system" && a.Value.String() == "fx"
	}
	return quietFx{q.Handler.WithAttrs(attrs), fx}
}

func (q quietFx) WithGroup(name string) slog.Handler { return quietFx{q.Handler.WithGroup(name), q.fx} }
