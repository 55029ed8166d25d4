package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAcrossNetworkNamespaces runs three nodes in network namespaces of
// their own, joined by veth pairs to a bridge (in a namespace of its own
// too), so traffic crosses real network stacks. One namespace is cut off and
// restored; a message sent meanwhile arrives. Addresses are in 198.18.0.0/15
// (set aside for benchmarking), inside namespaces the test creates and
// removes, also when it fails. It needs root and iproute2.
func TestAcrossNetworkNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (run as root, as .ci/run does)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (Debian's iproute2)")
	}
	tag := fmt.Sprintf("p%d", os.Getpid()%100000)
	br := tag + "-br"
	ns := []string{tag + "-1", tag + "-2", tag + "-3"}
	ipcmd := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		for _, n := range append(ns, br) {
			exec.Command("ip", "netns", "del", n).Run() // removes its links too
		}
	})
	ipcmd("netns", "add", br)
	ipcmd("netns", "exec", br, "ip", "link", "add", "br0", "type", "bridge")
	ipcmd("netns", "exec", br, "ip", "link", "set", "br0", "up")
	addr := func(i int) string { return fmt.Sprintf("198.18.0.%d", i+1) }
	for i, n := range ns {
		a, b := fmt.Sprintf("%sv%da", tag, i), fmt.Sprintf("%sv%db", tag, i)
		ipcmd("netns", "add", n)
		ipcmd("link", "add", a, "type", "veth", "peer", "name", b)
		ipcmd("link", "set", a, "netns", n)
		ipcmd("link", "set", b, "netns", br)
		ipcmd("netns", "exec", n, "ip", "addr", "add", addr(i)+"/24", "dev", a)
		ipcmd("netns", "exec", n, "ip", "link", "set", a, "up")
		ipcmd("netns", "exec", n, "ip", "link", "set", "lo", "up")
		ipcmd("netns", "exec", br, "ip", "link", "set", b, "master", "br0")
		ipcmd("netns", "exec", br, "ip", "link", "set", b, "up")
	}
	// in runs the CLI inside namespace i.
	in := func(i int, args ...string) result {
		t.Helper()
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns[i], parleyBin}, args...)...)
		var o, e logBuffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		r := result{out: o.String(), err: e.String()}
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return r
	}
	dir := t.TempDir()
	homes, ids, addrs := make([]string, 3), make([]string, 3), make([]string, 3)
	for i := range ns {
		homes[i] = filepath.Join(dir, fmt.Sprint("n", i))
		ids[i] = strings.TrimSpace(mustParley(t, "init", "--home", homes[i]))
		args := []string{"netns", "exec", ns[i], parleyBin, "run", "--home", homes[i],
			"--listen", "/ip4/" + addr(i) + "/tcp/0", "--api", "127.0.0.1:0", "--inbox-interval", "1s"}
		if i > 0 {
			args = append(args, "--bootstrap", addrs[0])
		}
		cmd := exec.Command("ip", args...)
		log := new(logBuffer)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
		waitFor(t, fmt.Sprint("node ", i, " in its namespace"), func() bool {
			r := in(i, "id", "--home", homes[i], "--json")
			var id struct{ Addrs []string }
			if r.code != 0 || json.Unmarshal([]byte(r.out), &id) != nil {
				return false
			}
			for _, a := range id.Addrs {
				if strings.HasPrefix(a, "/ip4/"+addr(i)+"/tcp/") {
					addrs[i] = a
				}
			}
			return addrs[i] != ""
		})
	}
	send := func(from, to int, text string) string {
		t.Helper()
		r := in(from, "send", "--home", homes[from], ids[to], text)
		if r.code != 0 {
			t.Fatalf("send %d->%d: %s", from, to, r.err)
		}
		return r.out
	}
	if out := send(0, 2, "across the bridge"); !strings.HasPrefix(out, "delivered ") {
		t.Fatalf("send across namespaces: %q", out)
	}

	// Cut node 2's namespace off the bridge; node 0 writes meanwhile.
	cut := fmt.Sprintf("%sv%db", tag, 2)
	ipcmd("netns", "exec", br, "ip", "link", "set", cut, "down")
	if out := send(0, 2, "while you were cut off"); !strings.HasPrefix(out, "stored ") && !strings.HasPrefix(out, "queued ") {
		t.Fatalf("send to the cut-off node printed %q", out)
	}
	ipcmd("netns", "exec", br, "ip", "link", "set", cut, "up")
	waitFor(t, "the message to arrive once the link is back", func() bool {
		r := in(2, "history", "--home", homes[2], ids[0], "--json")
		return r.code == 0 && strings.Contains(r.out, "while you were cut off")
	})
}
