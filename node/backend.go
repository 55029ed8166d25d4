package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/outbox"
	"github.com/parley-p2p/parley/seal"
	"github.com/parley-p2p/parley/store"
)

// The node is the local API's backend.
var _ api.Backend = (*Node)(nil)

// Identity is the node's peer ID and addresses.
func (n *Node) Identity() api.Identity {
	id := api.Identity{ID: n.id.ID().String(), Addrs: []string{}}
	for _, a := range n.Addrs() {
		id.Addrs = append(id.Addrs, a.String())
	}
	return id
}

// Resolve turns a petname or a peer ID into a peer ID.
func (n *Node) Resolve(who string) (peer.ID, error) {
	if who == "" {
		return "", api.BadInput("no peer given: name a contact or give a peer ID")
	}
	if p, err := n.store.Contact(who); err == nil {
		return p, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	p, err := peer.Decode(who)
	if err != nil {
		return "", api.BadInput(fmt.Sprintf("%q is neither a contact nor a peer ID; list contacts with 'parley contacts list' or add one with 'parley contacts add PEER NAME'", who))
	}
	if _, err := identity.X25519Public(p); err != nil {
		return "", api.BadInput(fmt.Sprintf("peer ID %s does not carry an Ed25519 key, so it is not a Parley address", who))
	}
	return p, nil
}

// Send queues a text for a peer and waits a little for its delivery.
func (n *Node) Send(ctx context.Context, req api.SendRequest) (api.Message, error) {
	to, err := n.Resolve(req.To)
	if err != nil {
		return api.Message{}, err
	}
	if to == n.id.ID() {
		return api.Message{}, api.BadInput("that is this node's own peer ID; messages go to someone else")
	}
	switch {
	case req.Text == "":
		return api.Message{}, api.BadInput("the message is empty; give some text to send")
	case len(req.Text) > seal.MaxBody:
		return api.Message{}, api.BadInput(fmt.Sprintf("the message is %d bytes; the limit is %d", len(req.Text), seal.MaxBody))
	case !utf8.ValidString(req.Text):
		return api.Message{}, api.BadInput("the message is not valid UTF-8 text")
	}
	wait := n.cfg.SendWait
	if req.WaitMillis > 0 {
		wait = time.Duration(req.WaitMillis) * time.Millisecond
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	m, err := n.outbox.Send(wctx, to, pb.Kind_KIND_TEXT, []byte(req.Text))
	if errors.Is(err, outbox.ErrEmpty) || errors.Is(err, outbox.ErrTooLarge) {
		return api.Message{}, api.BadInput(err.Error())
	}
	if err != nil {
		return api.Message{}, err
	}
	return n.view(m), nil
}

// History is the conversation with a peer, oldest first.
func (n *Node) History(_ context.Context, who string, limit int) ([]api.Message, error) {
	p, err := n.Resolve(who)
	if err != nil {
		return nil, err
	}
	ms, err := n.store.History(p, limit)
	if err != nil {
		return nil, err
	}
	return n.views(ms), nil
}

// Outbox lists the messages not yet delivered.
func (n *Node) Outbox(context.Context) ([]api.Message, error) {
	ms, err := n.store.Pending()
	if err != nil {
		return nil, err
	}
	return n.views(ms), nil
}

// Contacts lists the contacts.
func (n *Node) Contacts(context.Context) ([]api.Contact, error) {
	cs, err := n.store.Contacts()
	if err != nil {
		return nil, err
	}
	out := make([]api.Contact, len(cs))
	for i, c := range cs {
		out[i] = api.Contact{Name: c.Name, ID: c.ID.String()}
	}
	return out, nil
}

// AddContact gives a peer a petname.
func (n *Node) AddContact(_ context.Context, c api.Contact) (api.Contact, error) {
	if err := checkPetname(c.Name); err != nil {
		return api.Contact{}, err
	}
	p, err := peer.Decode(c.ID)
	if err != nil {
		return api.Contact{}, api.BadInput(fmt.Sprintf("%q is not a peer ID (it looks like 12D3KooW…); ask your contact for 'parley id'", c.ID))
	}
	if _, err := identity.X25519Public(p); err != nil {
		return api.Contact{}, api.BadInput(fmt.Sprintf("peer ID %s does not carry an Ed25519 key, so it is not a Parley address", c.ID))
	}
	if err := n.store.AddContact(c.Name, p); err != nil {
		if errors.Is(err, store.ErrNameTaken) {
			return api.Contact{}, api.BadInput(fmt.Sprintf("the name %q is already taken by another contact; remove it first or pick another name", c.Name))
		}
		return api.Contact{}, err
	}
	return api.Contact{Name: c.Name, ID: p.String()}, nil
}

// RemoveContact forgets a petname; the history stays.
func (n *Node) RemoveContact(_ context.Context, name string) error {
	err := n.store.RemoveContact(name)
	if errors.Is(err, store.ErrNotFound) {
		return api.BadInput(fmt.Sprintf("no contact is named %q; see 'parley contacts list'", name))
	}
	return err
}

// Subscribe streams live events.
func (n *Node) Subscribe() (<-chan api.Event, func()) { return n.events.Subscribe() }

// checkPetname keeps names easy to type and never confusable with a peer ID.
func checkPetname(name string) error {
	switch {
	case name == "":
		return api.BadInput("the contact name is empty")
	case utf8.RuneCountInString(name) > 64:
		return api.BadInput("the contact name is over 64 characters")
	case strings.IndexFunc(name, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0:
		return api.BadInput(fmt.Sprintf("the contact name %q has spaces or control characters; use a single word", name))
	}
	if _, err := peer.Decode(name); err == nil {
		return api.BadInput("a contact name must not itself be a peer ID")
	}
	return nil
}

func (n *Node) onReceived(m *store.Message) {
	if n.events.Watched() {
		n.events.Publish(api.Event{Type: "message", Message: n.view(m)})
	}
}

func (n *Node) onState(u store.Update) {
	if !n.events.Watched() {
		return
	}
	if m, err := n.store.Get(u.Peer, u.ID, true); err == nil {
		n.events.Publish(api.Event{Type: "state", Message: n.view(m)})
	}
}

func (n *Node) views(ms []*store.Message) []api.Message {
	out := make([]api.Message, len(ms))
	for i, m := range ms {
		out[i] = n.view(m)
	}
	return out
}

func (n *Node) view(m *store.Message) api.Message {
	v := api.Message{
		ID: hex.EncodeToString(m.ID), Peer: m.Peer.String(), Direction: "in",
		SentAt: m.SentAt.UTC().Format(time.RFC3339Nano), At: m.At.UTC().Format(time.RFC3339Nano),
		Text: string(m.Body), State: string(m.State), Reason: m.Reason,
	}
	if m.Outgoing {
		v.Direction = "out"
	}
	if n.store != nil {
		v.Name, _ = n.store.Petname(m.Peer)
	}
	return v
}
