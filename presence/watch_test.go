package presence

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-msgio/pbio"

	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/internal/exchange"
	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/store"
)

func newService(t *testing.T, maxWatchers int, mode Visibility) *Service {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "parley.db"), store.Options{})
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

// countingDHT answers every value lookup with its record, or "not found"
// when it has none, and counts them.
type countingDHT struct {
	lookups atomic.Int64
	record  []byte
}

func (d *countingDHT) Put(context.Context, string, []byte) (int, []peer.ID, error) {
	return 0, nil, nil
}
func (d *countingDHT) PutTo(context.Context, string, []byte, []peer.ID) int { return 0 }
func (d *countingDHT) GetValue(context.Context, string) ([]byte, error) {
	d.lookups.Add(1)
	if d.record != nil {
		return d.record, nil
	}
	return nil, routing.ErrNotFound
}

// TestOfflineNotifyIsNotLookedUpAtOnce: a contact's pushed offline record is
// its own word that it left, so the next watch does not look it up in the
// DHT; only after the quiet gap is it looked up again. A contact that
// watches us subscribes again when it is back, so for it that gap is the
// safety net's (maxQuiet).
func TestOfflineNotifyIsNotLookedUpAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name    string
		watches bool
	}{
		{"a contact that does not watch us", false},
		{"a contact that watches us", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, contact, dht, clock := withContact(t)
			quietGap := s.cfg.SubscribeTTL / 4
			if tc.watches {
				quietGap = maxQuiet
				if s.subscribed(contact.ID(), time.Hour) == 0 {
					t.Fatal("the contact was not granted a subscription")
				}
			}
			if _, err := s.learn(contact.ID(), encode(signed(t, contact, 1, nil, pb.Status_OFFLINE)), "notify"); err != nil {
				t.Fatal(err)
			}
			for _, step := range []struct {
				at      time.Duration
				lookups int64
			}{{0, 0}, {quietGap - time.Second, 0}, {quietGap + time.Second, 1}} {
				*clock = now.Add(step.at)
				s.watchAll(context.Background())
				if n := dht.lookups.Load(); n != step.lookups {
					t.Fatalf("%d lookups %v after it said it left, want %d", n, step.at, step.lookups)
				}
			}
		})
	}
}

func (d *countingDHT) Nearest(string, int) []peer.ID { return nil }

// TestUnreachableContactBacksOff: a contact whose record says online but
// who cannot be reached (gone without a goodbye, or behind a NAT) is not
// looked up again at every watch: it backs off as one offline. If it is
// online it subscribes to us itself, and we subscribe back over its
// connection.
func TestUnreachableContactBacksOff(t *testing.T) {
	s, contact, dht, clock := withContactOn(t, loopbackHost(t))
	dht.record = encode(signed(t, contact, 1, nil, pb.Status_ONLINE)) // no address in it
	quietGap := s.cfg.SubscribeTTL / 4
	for _, step := range []struct {
		at      time.Duration
		lookups int64
	}{{0, 1}, {time.Second, 1}, {quietGap - time.Second, 1}, {quietGap + time.Second, 2}} {
		*clock = now.Add(step.at)
		s.watchAll(context.Background())
		if n := dht.lookups.Load(); n != step.lookups {
			t.Fatalf("%d lookups %v after the first, want %d", n, step.at, step.lookups)
		}
	}
}

// withContact is a Service with one contact, whose lookups go to a
// countingDHT, on a clock the test moves.
func withContact(t *testing.T) (*Service, *identity.Identity, *countingDHT, *time.Time) {
	t.Helper()
	return withContactOn(t, nil)
}

// withContactOn is withContact over host h (nil: none).
func withContactOn(t *testing.T, h host.Host) (*Service, *identity.Identity, *countingDHT, *time.Time) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "parley.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	contact := newID(t)
	if err := st.AddContact("c", contact.ID()); err != nil {
		t.Fatal(err)
	}
	clock := now
	dht := &countingDHT{}
	s, err := New(Config{Identity: newID(t), Host: h, Store: st, DHT: dht, SendKey: func(peer.ID, PresenceKey) error { return nil },
		OnChange: func(View) {}, Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	return s, contact, dht, &clock
}

// TestAnswerAfterUnwatchStartsNothing: a SUBSCRIBE answered (granted)
// just before its connection closes can be read after the close has ended
// our subscription (a contact that hid from us closes our connections, and
// the goodbye it pushed may be lost with them). That answer must not start
// the subscription again, or the old record would be shown for its whole
// lifetime. Here the contact's end takes the close's place: it ends the
// subscription before it answers.
func TestAnswerAfterUnwatchStartsNothing(t *testing.T) {
	s, contact, _, _ := withContactOn(t, loopbackHost(t))
	ch, err := libp2p.New(libp2p.Identity(contact.PrivKey()), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	ch.SetStreamHandler(ProtocolID, func(str network.Stream) {
		defer str.Close()
		var f pb.PresenceFrame
		if err := exchange.ReadMsg(str, MaxFrame, &f); err != nil {
			str.Reset()
			return
		}
		s.Unwatch(contact.ID())
		rec := encode(signed(t, contact, 1, nil, pb.Status_ONLINE))
		pbio.NewDelimitedWriter(str).WriteMsg(&pb.PresenceFrame{Frame: &pb.PresenceFrame_Notify{Notify: &pb.Notify{Record: rec, GrantedSeconds: 600}}})
	})
	s.cfg.Host.Peerstore().AddAddrs(contact.ID(), ch.Addrs(), time.Minute)
	if err := s.Subscribe(context.Background(), contact.ID()); err == nil {
		t.Error("a SUBSCRIBE answered across an unwatch succeeded")
	}
	if s.Watching(contact.ID()) {
		t.Error("an answer read after the unwatch started the subscription again")
	}
}
