package presence

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"
)

// Where the contacts were outlives a restart. The node saves each
// contact's last known addresses as it stops, and the watch tries them
// before the DHT when it starts again: a contact still where it was then
// costs one handshake (the SUBSCRIBE's, whose answer carries its current
// record), not a walk of the DHT (about seven handshakes) followed by it.
// Most contacts are where they were after a restart of minutes or hours;
// the others cost one failed dial, bounded by knownDial, before the DHT.

const settingAddrs = "presence/addrs"

const (
	// maxSavedAddrs bounds the addresses saved per contact (as many as a
	// DHT answer may give for one peer).
	maxSavedAddrs = 8
	// knownDial bounds a dial to addresses already known: long enough for
	// a QUIC and TLS handshake across the world, short enough that a
	// contact who moved is soon looked up instead.
	knownDial = 5 * time.Second
)

// saveAddrs saves where each contact was last seen: the addresses the
// peerstore holds for it (its record's, and those of a connection to it).
func (s *Service) saveAddrs() error {
	if s.cfg.Host == nil {
		return nil
	}
	ps := s.cfg.Host.Peerstore()
	saved := map[string][]string{} // peer IDs in text: JSON map keys would not round-trip
	for c := range s.policy.Load().Contacts {
		addrs := ps.Addrs(c)
		if len(addrs) == 0 {
			continue
		}
		list := make([]string, 0, min(len(addrs), maxSavedAddrs))
		for _, a := range addrs[:min(len(addrs), maxSavedAddrs)] {
			list = append(list, a.String())
		}
		saved[c.String()] = list
	}
	return s.cfg.Store.PutSetting(settingAddrs, saved)
}

// restoreAddrs gives the peerstore the addresses saved when the node last
// stopped, for the contacts it still has, for as long as it keeps those of
// a peer just disconnected.
func (s *Service) restoreAddrs() error {
	if s.cfg.Host == nil {
		return nil
	}
	var saved map[string][]string
	if _, err := s.cfg.Store.Setting(settingAddrs, &saved); err != nil {
		return err
	}
	contacts := s.policy.Load().Contacts
	for id, list := range saved {
		p, err := peer.Decode(id)
		if err != nil || !contacts[p] {
			continue
		}
		var addrs []ma.Multiaddr
		for _, a := range list[:min(len(list), maxSavedAddrs)] {
			if m, err := ma.NewMultiaddr(a); err == nil {
				addrs = append(addrs, m)
			}
		}
		s.cfg.Host.Peerstore().AddAddrs(p, addrs, peerstore.RecentlyConnectedAddrTTL)
	}
	return nil
}

// subscribeKnown subscribes to c over a connection to it or at an address
// already known (its last record's, where it was when this node stopped,
// the card it was added with), and reports whether c answered. With no
// connection and no address it does not try.
func (s *Service) subscribeKnown(ctx context.Context, c peer.ID) bool {
	h := s.cfg.Host
	if h == nil {
		return false
	}
	if h.Network().Connectedness(c) != network.Connected && len(h.Peerstore().Addrs(c)) == 0 {
		return false
	}
	return s.Subscribe(network.WithDialPeerTimeout(ctx, knownDial), c) == nil
}
