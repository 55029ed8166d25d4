package presence

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Visibility says who may see the user's presence.
type Visibility string

// The visibility modes. Contacts is the default.
const (
	Everyone  Visibility = "everyone"  // anyone who looks the user up
	Contacts  Visibility = "contacts"  // the user's contacts
	Allowlist Visibility = "allowlist" // only contacts the user allowed one by one
)

// ParseVisibility checks a mode given by the user.
func ParseVisibility(s string) (Visibility, error) {
	switch v := Visibility(s); v {
	case Everyone, Contacts, Allowlist:
		return v, nil
	}
	return "", fmt.Errorf("unknown visibility %q: use everyone, contacts or allowlist", s)
}

// Policy decides who sees the user's presence. It is pure: the service
// rebuilds it from the store whenever a list changes.
type Policy struct {
	Mode     Visibility
	Contacts map[peer.ID]bool
	Allowed  map[peer.ID]bool // for Allowlist
	Denied   map[peer.ID]bool // hidden from, whatever the mode
	Blocked  map[peer.ID]bool // refused entirely
}

// Sealed reports whether records must be encrypted: whenever someone who can
// read the DHT is not meant to see them.
func (p Policy) Sealed() bool { return p.Mode != Everyone || len(p.Denied) > 0 || len(p.Blocked) > 0 }

// Watches reports whether the user subscribes to x's presence: x is a
// contact the user does not hide from. A subscription needs a connection
// to x, and a connection shows x that the user is online; the user may
// still look x up in the DHT, which x does not see.
func (p Policy) Watches(x peer.ID) bool {
	return p.Contacts[x] && !p.Denied[x] && !p.Blocked[x]
}

// MaySee reports whether x may see the user's presence.
func (p Policy) MaySee(x peer.ID) bool {
	if p.Denied[x] || p.Blocked[x] {
		return false
	}
	switch p.Mode {
	case Everyone:
		return true
	case Allowlist:
		return p.Allowed[x] && p.Contacts[x]
	default:
		return p.Contacts[x]
	}
}

// KeyHolders are the contacts who must hold the presence key to read
// sealed records: every contact who may see them.
func (p Policy) KeyHolders() map[peer.ID]bool {
	out := map[peer.ID]bool{}
	for c := range p.Contacts {
		if p.MaySee(c) {
			out[c] = true
		}
	}
	return out
}

// Refused reports whether connections from x are refused outright, so that
// dialing the user looks the same to x as dialing someone offline.
func (p Policy) Refused(x peer.ID) bool { return p.Denied[x] || p.Blocked[x] }

// KeyPlan is what a change of key holders calls for.
type KeyPlan struct {
	Rotate bool      // someone lost access: a new key for everyone left
	SendTo []peer.ID // holders who need the current (or new) key
}

// PlanKeys compares who held the key with who must hold it now. Revoking
// anyone rotates the key, and then every remaining holder gets the new one;
// otherwise only newcomers get the current key.
func PlanKeys(had, want map[peer.ID]bool) KeyPlan {
	var plan KeyPlan
	for p := range had {
		if !want[p] {
			plan.Rotate = true
			break
		}
	}
	for p := range want {
		if plan.Rotate || !had[p] {
			plan.SendTo = append(plan.SendTo, p)
		}
	}
	return plan
}
