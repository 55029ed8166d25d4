package presence

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/store"
)

func newService(t *testing.T, maxWatchers int, mode Visibility) *Service {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.PutSetting(settingVisibility, mode); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Identity: newID(t), Store: st, MaxWatchers: maxWatchers, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSubscribeFloodStaysBounded(t *testing.T) {
	s := newService(t, 10, Everyone)
	for i := range 100 {
		s.subscribed(peer.ID(fmt.Sprint("peer-", i)), time.Minute)
	}
	if n := s.Watchers(); n != 10 {
		t.Fatalf("%d watchers after a flood of 100, want the bound 10", n)
	}
	// One peer repeating itself holds one entry.
	s2 := newService(t, 10, Everyone)
	for range 1000 {
		s2.subscribed("same", time.Minute)
	}
	if n := s2.Watchers(); n != 1 {
		t.Fatalf("%d entries for one peer", n)
	}
	// A lifetime beyond MaxTTL is cut to it, and zero unsubscribes.
	if got := s2.subscribed("same", 10*time.Hour); got != MaxTTL {
		t.Fatalf("granted %v", got)
	}
	if got := s2.subscribed("same", 0); got != 0 || s2.Watchers() != 0 {
		t.Fatal("ttl 0 did not unsubscribe")
	}
}

func TestSubscribeOnlyWhoMaySee(t *testing.T) {
	s := newService(t, 10, Contacts)
	if got := s.subscribed("stranger", time.Minute); got != 0 {
		t.Fatalf("a stranger was granted %v in contacts mode", got)
	}
	if s.Watchers() != 0 {
		t.Fatal("a stranger became a watcher")
	}
}
