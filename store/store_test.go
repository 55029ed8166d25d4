package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func open(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "parley.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

const (
	bob   = peer.ID("bob-peer-id")
	carol = peer.ID("carol-peer-id")
)

func out(p peer.ID, n int) *Message {
	return &Message{ID: []byte(fmt.Sprintf("id-%013d", n)), Peer: p, At: time.Unix(int64(n), 0), Body: []byte(fmt.Sprint("msg ", n)), State: Queued}
}

func TestQueueAndDeliver(t *testing.T) {
	s, _ := open(t)
	for i := range 3 {
		if err := s.Queue(out(bob, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Queue(out(carol, 9)); err != nil {
		t.Fatal(err)
	}
	if err := s.Queue(out(bob, 0)); err == nil {
		t.Fatal("queueing the same id twice succeeded")
	}
	pending, _ := s.Pending()
	if len(pending) != 4 || string(pending[0].ID) != string(out(bob, 0).ID) || pending[3].Peer != carol {
		t.Fatalf("pending = %v", pending)
	}
	for _, c := range []struct {
		p    peer.ID
		want int
	}{{bob, 3}, {carol, 1}, {peer.ID("bob"), 0}, {peer.ID("bob-peer-id-2"), 0}, {"", 0}} {
		if to, err := s.PendingTo(c.p); err != nil || len(to) != c.want {
			t.Fatalf("pending to %q: %d messages (%v), want %d", c.p, len(to), err, c.want)
		} else {
			for _, m := range to {
				if m.Peer != c.p {
					t.Fatalf("pending to %q holds a message to %q", c.p, m.Peer)
				}
			}
		}
	}
	err := s.SetStates([]Update{{Peer: bob, ID: out(bob, 1).ID, State: Delivered}, {Peer: carol, ID: out(carol, 9).ID, State: Failed, Reason: "rejected"}})
	if err != nil {
		t.Fatal(err)
	}
	pending, _ = s.Pending()
	if len(pending) != 2 || string(pending[1].ID) != string(out(bob, 2).ID) {
		t.Fatalf("after delivery pending = %v", pending)
	}
	m, err := s.Get(carol, out(carol, 9).ID, true)
	if err != nil || m.State != Failed || m.Reason != "rejected" {
		t.Fatalf("carol's message: %+v, %v", m, err)
	}
	if err := s.SetStates([]Update{{Peer: bob, ID: []byte("unknown"), State: Delivered}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestReceiveDedup(t *testing.T) {
	s, _ := open(t)
	in := func(n int) *Message {
		return &Message{ID: []byte(fmt.Sprintf("in-%013d", n)), Peer: bob, Body: []byte("x"), State: Received}
	}
	added, err := s.Receive([]*Message{in(1), in(2), in(1)})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(added) != "[true true false]" {
		t.Fatalf("added = %v", added)
	}
	added, _ = s.Receive([]*Message{in(2), in(3)})
	if fmt.Sprint(added) != "[false true]" {
		t.Fatalf("added = %v", added)
	}
	// The same id from another sender is another message.
	other := in(1)
	other.Peer = carol
	added, _ = s.Receive([]*Message{other})
	if !added[0] {
		t.Fatal("same id from another peer was deduplicated")
	}
	h, _ := s.History(bob, 0)
	if len(h) != 3 {
		t.Fatalf("history has %d entries, want 3", len(h))
	}
}

func TestHistoryOrderAndLimit(t *testing.T) {
	s, _ := open(t)
	for i := range 5 {
		if err := s.Queue(out(bob, i)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Receive([]*Message{{ID: []byte(fmt.Sprint("r", i)), Peer: bob, Body: []byte("reply"), State: Received}}); err != nil {
			t.Fatal(err)
		}
	}
	h, _ := s.History(bob, 0)
	if len(h) != 10 {
		t.Fatalf("%d entries", len(h))
	}
	for i, m := range h {
		if m.Outgoing != (i%2 == 0) || m.Seq != uint64(i+1) {
			t.Fatalf("entry %d: out=%v seq=%d", i, m.Outgoing, m.Seq)
		}
	}
	last, _ := s.History(bob, 3)
	if len(last) != 3 || last[2].Seq != 10 || last[0].Seq != 8 {
		t.Fatalf("last 3 = %v", last)
	}
	if none, _ := s.History(carol, 0); len(none) != 0 {
		t.Fatal("empty conversation not empty")
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	s, path := open(t)
	if err := s.Queue(out(bob, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.AddContact("bob", bob); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if p, _ := s2.Pending(); len(p) != 1 {
		t.Fatalf("pending after reopen: %d", len(p))
	}
	if p, err := s2.Contact("bob"); err != nil || p != bob {
		t.Fatalf("contact after reopen: %v %v", p, err)
	}
}

// TestWrittenBeforeReturn reads a copy of the file taken while the store is
// still open, as a node restarted after a crash would: with or without the
// flush to disk, a write is in the file once the call returns.
func TestWrittenBeforeReturn(t *testing.T) {
	for _, o := range []Options{{}, {NoSync: true}} {
		path := filepath.Join(t.TempDir(), "parley.db")
		s, err := Open(path, o)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Queue(out(bob, 1)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		copied := filepath.Join(t.TempDir(), "copy.db")
		if err := os.WriteFile(copied, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s2, err := Open(copied, Options{})
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		if p, _ := s2.Pending(); len(p) != 1 {
			t.Errorf("%+v: pending in the file while open: %d", o, len(p))
		}
		s2.Close()
	}
}

func TestContacts(t *testing.T) {
	s, _ := open(t)
	if err := s.AddContact("bob", bob); err != nil {
		t.Fatal(err)
	}
	if err := s.AddContact("bob", carol); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("taking bob's name: %v", err)
	}
	if err := s.AddContact("robert", bob); err != nil { // rename
		t.Fatal(err)
	}
	if _, err := s.Contact("bob"); !errors.Is(err, ErrNotFound) {
		t.Fatal("old name still resolves after rename")
	}
	if n, _ := s.Petname(bob); n != "robert" {
		t.Fatalf("petname %q", n)
	}
	_ = s.AddContact("carol", carol)
	cs, _ := s.Contacts()
	if len(cs) != 2 || cs[0].Name != "carol" || cs[1].Name != "robert" {
		t.Fatalf("contacts %v", cs)
	}
	if err := s.RemoveContact("robert"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveContact("robert"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removing twice: %v", err)
	}
	if n, _ := s.Petname(bob); n != "" {
		t.Fatal("petname survives removal")
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	_, path := open(t)
	if _, err := Open(path, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
}

func TestCorruptDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "parley.db")
	junk := make([]byte, 64<<10)
	for i := range junk {
		junk[i] = byte(i * 7)
	}
	if err := os.WriteFile(path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path, Options{})
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Open of junk: %v", err)
	}
}

func TestConcurrentWritesShareCommits(t *testing.T) {
	s, _ := open(t)
	const writers = 64
	errs := make(chan error, writers+1)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.Queue(out(bob, i))
		}()
	}
	// A write that fails must fail alone, not take its group with it.
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := s.SetStates([]Update{{Peer: carol, ID: []byte("missing"), State: Delivered}})
		if !errors.Is(err, ErrNotFound) {
			errs <- fmt.Errorf("bad update: %v", err)
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	p, _ := s.Pending()
	if len(p) != writers {
		t.Fatalf("pending %d, want %d", len(p), writers)
	}
}

// TestReadShowsWhatItMarks checks that showing a conversation reads what
// it shows: with messages arriving all the while, every incoming message a
// Read returns is read, each is reported newly read exactly once, and
// outgoing messages and other kinds are left alone.
func TestReadShowsWhatItMarks(t *testing.T) {
	s, _ := open(t)
	const text, other, n = 1, 2, 200
	if err := s.Queue(&Message{ID: []byte("mine"), Peer: bob, Kind: text, Body: []byte("hi"), State: Queued}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for i := range n {
			m := &Message{ID: []byte(fmt.Sprint("in-", i)), Peer: bob, Kind: text, Body: []byte("x"), State: Received}
			if i%10 == 0 {
				m.Kind = other
			}
			if _, err := s.Receive([]*Message{m}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	reported := map[string]int{}
	check := func() int {
		ms, read, err := s.Read(bob, text)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range read {
			reported[string(id)]++
		}
		for _, m := range ms {
			switch {
			case m.Outgoing && m.State != Queued:
				t.Fatalf("outgoing message changed to %s", m.State)
			case !m.Outgoing && m.Kind == other && m.State != Received:
				t.Fatalf("message of another kind %s is %s", m.ID, m.State)
			case !m.Outgoing && m.Kind == text && m.State != Read:
				t.Fatalf("message %s shown but %s, not read", m.ID, m.State)
			}
		}
		return len(ms)
	}
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if shown := check(); shown != n+1 {
				t.Fatalf("%d messages shown, want %d", shown, n+1)
			}
			if len(reported) != n-n/10 {
				t.Fatalf("%d messages reported read, want %d", len(reported), n-n/10)
			}
			for id, k := range reported {
				if k != 1 {
					t.Fatalf("message %s reported read %d times", id, k)
				}
			}
			return
		default:
			check()
		}
	}
}
