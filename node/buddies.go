package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/presence"
	"github.com/parley-p2p/parley/store"
)

func presenceView(v presence.View, name string) api.Presence {
	out := api.Presence{Peer: v.Peer.String(), Name: name, Status: string(v.Status), Note: v.Note, Seq: v.Seq, Source: v.Source}
	for _, a := range v.Addrs {
		out.Addrs = append(out.Addrs, a.String())
	}
	if !v.Updated.IsZero() {
		out.Updated = v.Updated.UTC().Format(time.RFC3339Nano)
		out.Expires = v.Expires.UTC().Format(time.RFC3339Nano)
	}
	return out
}

func access(pol presence.Policy, p peer.ID) string {
	switch {
	case pol.Blocked[p]:
		return "blocked"
	case pol.Denied[p]:
		return "denied"
	case pol.Allowed[p]:
		return "allowed"
	}
	return ""
}

func (n *Node) onPresence(v presence.View) {
	if v.Status != presence.Offline {
		n.outbox.Wake(v.Peer) // messages parked at replicas can go directly now
	}
	if !n.events.Watched() {
		return
	}
	name, _ := n.store.Petname(v.Peer)
	pv := presenceView(v, name)
	n.events.Publish(api.Event{Type: "presence", Presence: &pv})
}

// SetAccess allows or denies a peer sight of the user's presence, or
// returns it to what the visibility mode says.
func (n *Node) SetAccess(_ context.Context, who, acc string) error {
	p, err := n.Resolve(who)
	if err != nil {
		return err
	}
	var allow, deny bool
	switch acc {
	case "allow":
		allow = true
	case "deny":
		deny = true
	case "default":
	default:
		return api.BadInput(fmt.Sprintf("unknown access %q: use allow, deny or default", acc))
	}
	if err := n.store.Mark(presence.ListAllow, p, allow); err != nil {
		return err
	}
	if err := n.store.Mark(presence.ListDeny, p, deny); err != nil {
		return err
	}
	if err := n.presence.PolicyChanged(); err != nil {
		return err
	}
	if deny {
		// A live connection would tell p the user is online.
		n.host.Network().ClosePeer(p)
	}
	return nil
}

// MyStatus is the user's own presence and how its last publication went.
func (n *Node) MyStatus(context.Context) (api.MyStatus, error) {
	st, note, stats := n.presence.Status()
	out := api.MyStatus{
		Status: string(st), Note: note, Visibility: string(n.presence.Visibility()),
		Seq: stats.Seq, Accepted: stats.Accepted, Asked: stats.Asked, Watchers: n.presence.Watchers(),
	}
	if !stats.At.IsZero() {
		out.Published = stats.At.UTC().Format(time.RFC3339Nano)
	}
	return out, nil
}

// SetStatus sets the user's status and note, and publishes them.
func (n *Node) SetStatus(ctx context.Context, req api.StatusRequest) (api.MyStatus, error) {
	st, err := presence.ParseStatus(req.Status)
	if err != nil {
		return api.MyStatus{}, api.BadInput(err.Error())
	}
	if err := n.presence.SetStatus(st, req.Note); err != nil {
		return api.MyStatus{}, api.BadInput(err.Error())
	}
	return n.MyStatus(ctx)
}

// SetVisibility sets who may see the user.
func (n *Node) SetVisibility(ctx context.Context, mode string) (api.MyStatus, error) {
	v, err := presence.ParseVisibility(mode)
	if err != nil {
		return api.MyStatus{}, api.BadInput(err.Error())
	}
	if err := n.presence.SetVisibility(v); err != nil {
		return api.MyStatus{}, err
	}
	return n.MyStatus(ctx)
}

// Whois resolves a peer's presence (from the cache while it is fresh).
func (n *Node) Whois(ctx context.Context, who string) (api.Presence, error) {
	p, err := n.Resolve(who)
	if err != nil {
		return api.Presence{}, err
	}
	if p == n.id.ID() {
		return api.Presence{}, api.BadInput("that is this node; see 'parley status'")
	}
	v, err := n.presence.Resolve(ctx, p)
	if err != nil {
		return api.Presence{}, err
	}
	name, _ := n.store.Petname(p)
	return presenceView(v, name), nil
}

// Requests lists strangers who wrote to the user.
func (n *Node) Requests(context.Context) ([]api.Request, error) {
	rs, err := n.store.Requests()
	if err != nil {
		return nil, err
	}
	out := make([]api.Request, len(rs))
	for i, r := range rs {
		out[i] = api.Request{Peer: r.Peer.String(), First: r.First.UTC().Format(time.RFC3339), Last: r.Last.UTC().Format(time.RFC3339)}
		h, err := n.store.History(r.Peer, 0)
		if err != nil {
			return nil, err
		}
		for _, m := range h {
			if !m.Outgoing && pb.Kind(m.Kind) == pb.Kind_KIND_TEXT {
				out[i].Messages++
				out[i].Last = m.At.UTC().Format(time.RFC3339)
			}
		}
	}
	return out, nil
}

// AnswerRequest accepts a stranger as a contact, denies them sight of the
// user, or blocks them altogether.
func (n *Node) AnswerRequest(ctx context.Context, who, action, name string) error {
	p, err := n.Resolve(who)
	if err != nil {
		return err
	}
	rs, err := n.store.Requests()
	if err != nil {
		return err
	}
	open := false
	for _, r := range rs {
		open = open || r.Peer == p
	}
	if !open && action != "block" {
		return api.BadInput(fmt.Sprintf("no contact request from %s; see 'parley requests'", who))
	}
	switch action {
	case "accept":
		if name == "" {
			s := p.String()
			name = "peer-" + s[len(s)-6:]
		}
		_, err := n.AddContact(ctx, api.Contact{Name: name, ID: p.String()})
		return err
	case "deny":
		if err := n.store.Mark(presence.ListDeny, p, true); err != nil {
			return err
		}
	case "block":
		if err := n.store.Mark(presence.ListBlock, p, true); err != nil {
			return err
		}
		// Cut any connection now; the gater keeps new ones out.
		defer n.host.Network().ClosePeer(p)
	default:
		return api.BadInput(fmt.Sprintf("unknown answer %q: use accept, deny or block", action))
	}
	if err := n.store.DropRequest(p); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return n.presence.PolicyChanged()
}

// LookupPresence fetches p's presence from the DHT, never from the cache
// (the simulation and benchmarks measure lookups with it).
func (n *Node) LookupPresence(ctx context.Context, p peer.ID) (api.Presence, error) {
	v, err := n.presence.Lookup(ctx, p)
	if err != nil {
		return api.Presence{}, err
	}
	return presenceView(v, ""), nil
}
