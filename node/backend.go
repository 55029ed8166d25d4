package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/inbox"
	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/outbox"
	"github.com/parley-p2p/parley/presence"
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
	// Showing the conversation is reading it.
	ms, read, err := n.store.Read(p, int32(pb.Kind_KIND_TEXT))
	if err != nil {
		return nil, err
	}
	if len(read) > 0 && !n.cfg.Inbox.NoReadReceipts {
		n.sendReceipt(p, pb.DeliveryReceipt_READ, read)
	}
	texts := ms[:0] // control messages (presence keys) are not conversation
	for _, m := range ms {
		if pb.Kind(m.Kind) == pb.Kind_KIND_TEXT {
			texts = append(texts, m)
		}
	}
	if limit > 0 && len(texts) > limit {
		texts = texts[len(texts)-limit:]
	}
	return n.views(texts), nil
}

// Outbox lists the texts not yet delivered (queued, or waiting at
// replicas); control messages are left out.
func (n *Node) Outbox(context.Context) ([]api.Message, error) {
	ms, err := n.store.Pending()
	if err != nil {
		return nil, err
	}
	texts := ms[:0]
	for _, m := range ms {
		if pb.Kind(m.Kind) == pb.Kind_KIND_TEXT {
			texts = append(texts, m)
		}
	}
	return n.views(texts), nil
}

// Contacts lists the contacts with their presence as last seen here (pushed
// by NOTIFY or fetched from the DHT) and what each may see of the user.
func (n *Node) Contacts(context.Context) ([]api.Contact, error) {
	cs, err := n.store.Contacts()
	if err != nil {
		return nil, err
	}
	pol := n.presence.Policy()
	out := make([]api.Contact, len(cs))
	for i, c := range cs {
		v, _ := n.presence.Cached(c.ID)
		pv := presenceView(v, c.Name)
		out[i] = api.Contact{Name: c.Name, ID: c.ID.String(), Presence: &pv, Access: access(pol, c.ID)}
	}
	return out, nil
}

// AddContact gives a peer a petname.
func (n *Node) AddContact(_ context.Context, c api.Contact) (api.Contact, error) {
	if err := checkPetname(c.Name); err != nil {
		return api.Contact{}, err
	}
	p, addrs, err := contactCard(c)
	if err != nil {
		return api.Contact{}, err
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
	if err := n.store.DropRequest(p); err != nil {
		return api.Contact{}, err
	}
	if len(addrs) > 0 {
		// Before the presence key goes out (PolicyChanged sends it).
		n.host.Peerstore().AddAddrs(p, addrs, peerstore.AddressTTL)
	}
	if err := n.presence.PolicyChanged(); err != nil {
		return api.Contact{}, err
	}
	n.presence.Kick(p)
	return api.Contact{Name: c.Name, ID: p.String()}, nil
}

// contactCard reads the peer a new contact names and the addresses it came
// with: a peer ID, or an address ending in /p2p/<peer ID> (as 'parley id'
// prints them), plus any further addresses.
func contactCard(c api.Contact) (peer.ID, []ma.Multiaddr, error) {
	var addrs []ma.Multiaddr
	id := c.ID
	if strings.HasPrefix(id, "/") {
		a, err := ma.NewMultiaddr(id)
		if err != nil {
			return "", nil, api.BadInput(fmt.Sprintf("%q is not an address: %v; give the peer ID or an address from the contact's 'parley id'", c.ID, err))
		}
		ai, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			return "", nil, api.BadInput(fmt.Sprintf("address %s does not end in /p2p/<peer ID>; copy a whole line of the contact's 'parley id'", c.ID))
		}
		id, addrs = ai.ID.String(), ai.Addrs
	}
	p, err := peer.Decode(id)
	if err != nil {
		return "", nil, api.BadInput(fmt.Sprintf("%q is not a peer ID (it looks like 12D3KooW…); ask your contact for 'parley id'", c.ID))
	}
	for _, s := range c.Addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return "", nil, api.BadInput(fmt.Sprintf("%q is not an address: %v", s, err))
		}
		rest, of := peer.SplitAddr(a)
		if of != "" && of != p {
			return "", nil, api.BadInput(fmt.Sprintf("address %s is another peer's (%s), not %s's", s, of, p))
		}
		if rest != nil {
			addrs = append(addrs, rest)
		}
	}
	return p, addrs, nil
}

// RemoveContact forgets a petname; the history stays.
func (n *Node) RemoveContact(_ context.Context, name string) error {
	err := n.store.RemoveContact(name)
	if errors.Is(err, store.ErrNotFound) {
		return api.BadInput(fmt.Sprintf("no contact is named %q; see 'parley contacts list'", name))
	}
	if err != nil {
		return err
	}
	return n.presence.PolicyChanged() // a removed contact loses the presence key
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

// onReceived handles a newly stored incoming message: a presence key is
// handed to presence; a text from a stranger opens a contact request.
func (n *Node) onReceived(m *store.Message) {
	switch pb.Kind(m.Kind) {
	case pb.Kind_KIND_PRESENCE_KEY:
		var k pb.PresenceKey
		if err := proto.Unmarshal(m.Body, &k); err != nil {
			n.log.Warn("node: malformed presence key", "peer", m.Peer, "err", err)
			return
		}
		if err := n.presence.AcceptKey(m.Peer, presence.PresenceKey{ID: k.KeyId, Key: k.Key}); err != nil {
			n.log.Warn("node: presence key refused", "peer", m.Peer, "err", err)
		}
		return
	case pb.Kind_KIND_RECEIPT:
		var r pb.DeliveryReceipt
		if err := proto.Unmarshal(m.Body, &r); err != nil {
			n.log.Warn("node: malformed receipt", "peer", m.Peer, "err", err)
			return
		}
		state := store.Delivered
		if r.State == pb.DeliveryReceipt_READ {
			state = store.Read
		}
		n.log.Debug("node: receipt", "peer", m.Peer, "state", state, "messages", len(r.Ids))
		n.outbox.Settle(m.Peer, r.Ids, state)
		return
	case pb.Kind_KIND_TEXT:
	default:
		return
	}
	if !n.presence.Policy().Contacts[m.Peer] {
		if err := n.store.NoteRequest(m.Peer, m.At); err != nil {
			n.log.Error("node: cannot record contact request", "peer", m.Peer, "err", err)
		}
	}
	if n.events.Watched() {
		v := n.view(m)
		n.events.Publish(api.Event{Type: "message", Message: &v})
	}
}

// onCollected handles messages fetched from the replicas: each as if it
// had come directly, then one receipt per sender, since no ack told it.
func (n *Node) onCollected(ms []*store.Message) {
	delivered := map[peer.ID][][]byte{}
	for _, m := range ms {
		n.onReceived(m)
		if pb.Kind(m.Kind) == pb.Kind_KIND_TEXT {
			delivered[m.Peer] = append(delivered[m.Peer], m.ID)
		}
	}
	for p, ids := range delivered {
		n.sendReceipt(p, pb.DeliveryReceipt_DELIVERED, ids)
	}
}

// sendReceipt queues a delivery or read receipt through the outbox.
func (n *Node) sendReceipt(to peer.ID, state pb.DeliveryReceipt_State, ids [][]byte) {
	for len(ids) > 0 {
		k := min(len(ids), 512) // well inside a message body
		body, err := proto.Marshal(&pb.DeliveryReceipt{State: state, Ids: ids[:k]})
		if err == nil {
			_, err = n.outbox.Queue(to, pb.Kind_KIND_RECEIPT, body)
		}
		if err != nil {
			n.log.Warn("node: cannot queue a receipt", "peer", to, "err", err)
		}
		ids = ids[k:]
	}
}

// sendPresenceKey queues the user's presence key for a contact, through
// the outbox: durable, sealed end to end, retried until delivered.
func (n *Node) sendPresenceKey(to peer.ID, key presence.PresenceKey) error {
	body, err := proto.Marshal(&pb.PresenceKey{KeyId: key.ID, Key: key.Key})
	if err != nil {
		return err
	}
	_, err = n.outbox.Queue(to, pb.Kind_KIND_PRESENCE_KEY, body)
	return err
}

func (n *Node) onState(u store.Update) {
	if !n.events.Watched() {
		return
	}
	if m, err := n.store.Get(u.Peer, u.ID, true); err == nil && pb.Kind(m.Kind) == pb.Kind_KIND_TEXT {
		v := n.view(m)
		n.events.Publish(api.Event{Type: "state", Message: &v})
	}
}

// views shows messages, looking each peer's petname up once, not once per
// message.
func (n *Node) views(ms []*store.Message) []api.Message {
	names := map[peer.ID]string{}
	out := make([]api.Message, len(ms))
	for i, m := range ms {
		name, ok := names[m.Peer]
		if !ok {
			name, _ = n.store.Petname(m.Peer)
			names[m.Peer] = name
		}
		out[i] = messageView(m, name)
	}
	return out
}

func (n *Node) view(m *store.Message) api.Message {
	name, _ := n.store.Petname(m.Peer)
	return messageView(m, name)
}

func messageView(m *store.Message, name string) api.Message {
	v := api.Message{Name: name,
		ID: hex.EncodeToString(m.ID), Peer: m.Peer.String(), Direction: "in",
		SentAt: m.SentAt.UTC().Format(time.RFC3339Nano), At: m.At.UTC().Format(time.RFC3339Nano),
		Text: string(m.Body), State: string(m.State), Reason: m.Reason,
		Replicas: m.Replicas, Of: m.Of,
	}
	if m.Outgoing {
		v.Direction = "out"
	}
	return v
}

// Inbox is what this node holds as a replica for others, and its outbox.
func (n *Node) Inbox(ctx context.Context) (api.InboxView, error) {
	v := api.InboxView{Holdings: []api.Holding{}}
	for p, t := range n.replica.Totals() {
		v.Holdings = append(v.Holdings, api.Holding{Recipient: p.String(), Items: t.Items, Bytes: t.Bytes})
	}
	sort.Slice(v.Holdings, func(i, j int) bool { return v.Holdings[i].Recipient < v.Holdings[j].Recipient })
	out, err := n.Outbox(ctx)
	v.Outbox = out
	return v, err
}

// Info is how the node is doing: DHT, connections, presence, queues.
func (n *Node) Info(ctx context.Context) (api.NodeInfo, error) {
	st, _, _ := n.presence.Status()
	info := api.NodeInfo{
		Identity: n.Identity(), RoutingTable: n.dht.RoutingTable().Size(),
		Connected: len(n.host.Network().Peers()), DHTMode: dhtModeName(n.dht.Mode()), Status: string(st),
	}
	out, err := n.Outbox(ctx)
	info.Outbox = len(out)
	for _, t := range n.replica.Totals() {
		info.Held += t.Items
	}
	return info, err
}

// CollectInbox fetches what replicas hold for this node, now.
func (n *Node) CollectInbox(ctx context.Context) (int, error) { return n.collect.Collect(ctx) }

// InboxRoundTrip measures the floor under a collection: one lookup of this
// node's replicas and one fetch round trip to the first of them. The
// lookup is kad-dht's own GetClosestPeers, the plain libp2p baseline the
// target is stated against, not Parley's walk (dht.Closest).
func (n *Node) InboxRoundTrip(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	replicas, err := inbox.NewClient(n.host, n.dht.IpfsDHT.GetClosestPeers, n.inboxes.R()).Replicas(ctx, n.id.ID())
	if err != nil {
		return 0, err
	}
	if len(replicas) == 0 {
		return 0, fmt.Errorf("node: no replicas in reach")
	}
	if _, err := n.inboxes.Fetch(ctx, replicas[0], [][]byte{make([]byte, inbox.IDSize)}); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}
