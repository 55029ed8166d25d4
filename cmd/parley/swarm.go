package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/api/client"
	"github.com/parley-p2p/parley/identity"
)

// maxSwarm bounds a swarm on one machine: each node is a process with its
// own listeners, DHT and database.
const maxSwarm = 64

// swarmFile describes a running swarm in its directory.
const swarmFile = "swarm.json"

// swarmNode is one node of a swarm as swarm.json and --json show it.
type swarmNode struct {
	Name   string `json:"name"`
	Home   string `json:"home"`
	ID     string `json:"id"`
	API    string `json:"api"`
	Listen string `json:"listen"`
	PID    int    `json:"pid"`
}

type swarmState struct {
	PID   int         `json:"pid"`
	Nodes []swarmNode `json:"nodes"`
	Join  string      `json:"join"`
}

func defaultSwarmDir() string {
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".parley-swarm")
	}
	return "parley-swarm"
}

func newSwarm(g *globals) *cobra.Command {
	var nodes int
	var dir string
	cmd := &cobra.Command{
		Use:   "swarm",
		Short: "Run N real Parley nodes on this machine until interrupted",
		Long: "Start N 'parley run' processes on 127.0.0.1 (the first is everyone's bootstrap), wait\n" +
			"until each is up with a populated routing table, print them and the command that\n" +
			"joins the swarm from another terminal, then run until Ctrl-C, which stops them all.\n" +
			"Homes stay in DIR, so the same swarm starts again with the same identities.",
		Args: exactArgs(0, "swarm --nodes N [--dir DIR] [--json]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if nodes < 1 || nodes > maxSwarm {
				return fmt.Errorf("--nodes %d is out of range: a swarm on one machine has 1 to %d nodes", nodes, maxSwarm)
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			return runSwarm(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), abs, nodes, g.json)
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", 5, "how many nodes")
	cmd.Flags().StringVar(&dir, "dir", defaultSwarmDir(), "where the nodes' homes live")
	cmd.Flags().BoolVar(&g.json, "json", false, "print the swarm as JSON once it is up")
	status := &cobra.Command{
		Use:   "status",
		Short: "Show each node of a running swarm: state, presence, routing-table size",
		Args:  exactArgs(0, "swarm status [--dir DIR] [--json]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			return swarmStatus(cmd.Context(), cmd.OutOrStdout(), abs, g.json)
		},
	}
	status.Flags().StringVar(&dir, "dir", defaultSwarmDir(), "the swarm's directory")
	status.Flags().BoolVar(&g.json, "json", false, "print JSON")
	cmd.AddCommand(status)
	return cmd
}

// runSwarm starts the nodes, reports, and stops them on ctx's end.
func runSwarm(ctx context.Context, stdout, stderr io.Writer, dir string, n int, asJSON bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot create %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer lock.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// Children are started from one locked OS thread that lives as long as
	// the swarm: Pdeathsig fires when the thread that forked them dies, so
	// this makes it fire exactly when the swarm process dies, killed or not.
	spawn := make(chan spawnReq)
	stopSpawner := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		for {
			select {
			case r := <-spawn:
				r.done <- r.cmd.Start()
			case <-stopSpawner:
				return // the thread stays locked and is discarded with the goroutine
			}
		}
	}()
	var procs []*proc
	defer func() {
		stopAll(procs, stderr)
		os.Remove(filepath.Join(dir, swarmFile))
		close(stopSpawner)
	}()
	state := swarmState{PID: os.Getpid()}
	for i := 1; i <= n; i++ {
		if ctx.Err() != nil {
			return nil
		}
		name := fmt.Sprintf("node%d", i)
		home := filepath.Join(dir, name)
		if _, err := identity.Load(home); err != nil {
			if _, err := identity.Create(home); err != nil {
				return err
			}
		}
		os.Remove(filepath.Join(home, api.URLFile)) // left by a node that was killed
		fmt.Fprintf(stderr, "starting %s (%d/%d)...\n", name, i, n)
		args := []string{"run", "--home", home, "--listen", "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/udp/0/quic-v1", "--api", "127.0.0.1:0"}
		if i > 1 {
			args = append(args, "--bootstrap", state.Nodes[0].Listen)
		}
		logf, err := os.OpenFile(filepath.Join(home, "run.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		cmd := exec.Command(self, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
		r := spawnReq{cmd: cmd, done: make(chan error)}
		spawn <- r
		err = <-r.done
		logf.Close()
		if err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		pr := &proc{cmd: cmd, exited: make(chan struct{})}
		go func() {
			cmd.Wait()
			close(pr.exited)
		}()
		procs = append(procs, pr)
		node, err := waitNodeUp(ctx, pr, home, name)
		if err != nil {
			return err
		}
		state.Nodes = append(state.Nodes, node)
	}
	fmt.Fprintln(stderr, "waiting for every routing table to fill...")
	if err := waitRouting(ctx, state.Nodes, n); err != nil {
		return err
	}
	state.Join = fmt.Sprintf("parley run --home ~/.parley --bootstrap %s", state.Nodes[0].Listen)
	raw, _ := json.MarshalIndent(state, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, swarmFile), raw, 0o600); err != nil {
		return err
	}
	if asJSON {
		json.NewEncoder(stdout).Encode(state)
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tPEER ID\tAPI\tLISTEN")
		for _, nd := range state.Nodes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", nd.Name, nd.ID, nd.API, nd.Listen)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "\n%d nodes up. Join from another terminal with:\n\n  parley init --home ~/.parley   # once\n  %s\n\nCtrl-C stops the swarm.\n", n, state.Join)
	}
	// Run until interrupted, or until a node dies on its own.
	died := make(chan string, len(procs))
	for i, p := range procs {
		go func() {
			<-p.exited
			died <- state.Nodes[i].Name
		}()
	}
	select {
	case <-ctx.Done():
		fmt.Fprintln(stderr, "stopping the swarm...")
		return nil
	case name := <-died:
		return fmt.Errorf("%s stopped on its own; see %s", name, filepath.Join(dir, name, "run.log"))
	}
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

// proc is a started node process; exited closes once it has been reaped.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// waitNodeUp waits for a node's API and returns what it says of itself.
func waitNodeUp(ctx context.Context, p *proc, home, name string) (swarmNode, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := client.New(home); err == nil {
			if id, err := c.Identity(ctx); err == nil {
				node := swarmNode{Name: name, Home: home, ID: id.ID, PID: p.cmd.Process.Pid}
				u, _ := os.ReadFile(filepath.Join(home, api.URLFile))
				node.API = strings.TrimSpace(string(u))
				for _, a := range id.Addrs {
					if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
						node.Listen = a
					}
				}
				return node, nil
			}
		}
		select {
		case <-p.exited:
			return swarmNode{}, fmt.Errorf("%s exited during start; see %s", name, filepath.Join(home, "run.log"))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return swarmNode{}, fmt.Errorf("%s did not come up in time; see %s", name, filepath.Join(home, "run.log"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitRouting waits until every node's routing table holds someone (all
// the others, in a small swarm).
func waitRouting(ctx context.Context, nodes []swarmNode, n int) error {
	want := min(n-1, 3)
	deadline := time.Now().Add(60 * time.Second)
	for _, nd := range nodes {
		c, err := client.New(nd.Home)
		if err != nil {
			return err
		}
		for {
			info, err := c.Info(ctx)
			if err == nil && info.RoutingTable >= want {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s's routing table did not fill (%d peers)", nd.Name, info.RoutingTable)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// stopAll interrupts every node, waits, and kills what is left.
func stopAll(procs []*proc, stderr io.Writer) {
	for _, p := range procs {
		p.cmd.Process.Signal(syscall.SIGINT)
	}
	timeout := time.After(10 * time.Second)
	for _, p := range procs {
		select {
		case <-p.exited:
			continue
		case <-timeout:
		}
		fmt.Fprintf(stderr, "node %d did not stop in time; killing it\n", p.cmd.Process.Pid)
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// lockDir takes the swarm directory's lock, so two swarms do not share it.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "swarm.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("a swarm is already running in %s; stop it (Ctrl-C in its terminal) or use another --dir", dir)
		}
		return nil, err
	}
	return f, nil
}

// swarmStatus reports on each node of the swarm in dir; it fails unless
// every node is up.
func swarmStatus(ctx context.Context, w io.Writer, dir string, asJSON bool) error {
	raw, err := os.ReadFile(filepath.Join(dir, swarmFile))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no swarm is running in %s; start one with 'parley swarm --dir %s'", dir, dir)
	}
	if err != nil {
		return err
	}
	var state swarmState
	if err := json.Unmarshal(raw, &state); err != nil {
		return fmt.Errorf("%s is corrupt: %w", filepath.Join(dir, swarmFile), err)
	}
	if syscall.Kill(state.PID, 0) != nil {
		return fmt.Errorf("the swarm in %s is not running (its process %d is gone); start it again with 'parley swarm --dir %s'", dir, state.PID, dir)
	}
	type row struct {
		swarmNode
		State string       `json:"state"`
		Info  api.NodeInfo `json:"info"`
	}
	var rows []row
	down := 0
	for _, nd := range state.Nodes {
		r := row{swarmNode: nd, State: "down"}
		if c, err := client.New(nd.Home); err == nil {
			if info, err := c.Info(ctx); err == nil {
				r.State, r.Info = "up", info
			}
		}
		if r.State != "up" {
			down++
		}
		rows = append(rows, r)
	}
	if asJSON {
		json.NewEncoder(w).Encode(rows)
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSTATE\tPRESENCE\tROUTING TABLE\tCONNECTED\tPEER ID")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", r.Name, r.State, r.Info.Status, r.Info.RoutingTable, r.Info.Connected, r.ID)
		}
		tw.Flush()
	}
	if down > 0 {
		return fmt.Errorf("%d of %d nodes are down", down, len(rows))
	}
	return nil
}
