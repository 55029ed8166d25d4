// Package api is the daemon's local HTTP+JSON interface: the types it
// speaks, the server that `parley run` exposes on 127.0.0.1 behind a random
// token, and (in api/client) the Go client that the CLI uses. Live events
// stream as Server-Sent Events.
package api

import (
	"context"
	"errors"
)

// Files in a Parley home that tell a client where the daemon listens.
const (
	URLFile   = "api"       // the base URL, written once the daemon is ready
	TokenFile = "api.token" // the bearer token, mode 0600
)

// Identity is the node's address.
type Identity struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

// NodeInfo is how the node is doing.
type NodeInfo struct {
	Identity
	RoutingTable int    `json:"routing_table"` // peers in the DHT routing table
	Connected    int    `json:"connected"`     // peers with a live connection
	DHTMode      string `json:"dht_mode"`
	Status       string `json:"status"` // the user's presence status
	Outbox       int    `json:"outbox"` // messages not yet delivered
	Held         int    `json:"held"`   // items held for others as a replica
}

// Message is one history entry as the API shows it.
type Message struct {
	ID        string `json:"id"` // hex
	Peer      string `json:"peer"`
	Name      string `json:"name,omitempty"` // the peer's petname
	Direction string `json:"direction"`      // "in" or "out"
	SentAt    string `json:"sent_at"`        // RFC 3339, the sender's clock
	At        string `json:"at"`             // RFC 3339, when this node stored it
	Text      string `json:"text"`
	State     string `json:"state"` // out: queued, stored, delivered, read, failed; in: received, read
	Reason    string `json:"reason,omitempty"`
	Replicas  int    `json:"replicas,omitempty"` // stored: replicas that hold it
	Of        int    `json:"of,omitempty"`       // stored: replicas asked
}

// InboxView is what this node holds as a replica for others (never their
// contents) and what waits in its own outbox.
type InboxView struct {
	Holdings []Holding `json:"holdings"`
	Outbox   []Message `json:"outbox"`
}

// Holding is what a replica holds for one recipient.
type Holding struct {
	Recipient string `json:"recipient"`
	Items     int    `json:"items"`
	Bytes     int64  `json:"bytes"`
}

// SendRequest asks the daemon to send a text.
type SendRequest struct {
	To   string `json:"to"` // peer ID or petname
	Text string `json:"text"`
	// WaitMillis is how long to wait for delivery before answering with
	// the message still queued; 0 means the daemon's default.
	WaitMillis int `json:"wait_ms,omitempty"`
}

// Contact is a petname and the peer it names, with what this node knows
// of the contact's presence and what the contact may see of the user.
type Contact struct {
	Name string `json:"name"`
	ID   string `json:"id"` // a peer ID, or an address ending in /p2p/<peer ID>
	// Addrs, when adding a contact, are where it said it listens (its
	// 'parley id'): the first messages and the presence key go straight
	// there, with no DHT lookup, which cannot find a peer behind NAT.
	Addrs    []string  `json:"addrs,omitempty"`
	Presence *Presence `json:"presence,omitempty"`
	Access   string    `json:"access,omitempty"` // "allowed", "denied", "blocked" or "" (the visibility mode decides)
}

// Presence is a peer's presence as this node sees it. Someone offline,
// someone who hides from this node and someone never seen look the same.
type Presence struct {
	Peer    string   `json:"peer"`
	Name    string   `json:"name,omitempty"`
	Status  string   `json:"status"` // online, away, busy, offline
	Note    string   `json:"note,omitempty"`
	Addrs   []string `json:"addrs,omitempty"`
	Seq     uint64   `json:"seq,omitempty"`
	Updated string   `json:"updated,omitempty"` // RFC 3339: when this node got the record
	Expires string   `json:"expires,omitempty"`
	Source  string   `json:"source,omitempty"` // "dht", "subscribe" (answer to our SUBSCRIBE) or "notify" (pushed)
}

// MyStatus is the user's own presence.
type MyStatus struct {
	Status     string `json:"status"` // online, away, busy, invisible
	Note       string `json:"note,omitempty"`
	Visibility string `json:"visibility"` // everyone, contacts, allowlist
	Seq        uint64 `json:"seq"`
	Published  string `json:"published,omitempty"` // RFC 3339
	Accepted   int    `json:"accepted"`            // DHT peers that stored the last record
	Asked      int    `json:"asked"`               // DHT peers asked to
	Watchers   int    `json:"watchers"`
}

// StatusRequest sets the user's status.
type StatusRequest struct {
	Status string `json:"status"`
	Note   string `json:"note"`
}

// Request is a stranger who wrote to the user.
type Request struct {
	Peer     string `json:"peer"`
	First    string `json:"first"`
	Last     string `json:"last"`
	Messages int    `json:"messages"`
}

// Event is one live event: a message arrived ("message"), an outgoing
// message changed state ("state"), or a contact's presence changed
// ("presence").
type Event struct {
	Type     string    `json:"type"`
	Message  *Message  `json:"message,omitempty"`
	Presence *Presence `json:"presence,omitempty"`
}

// Error is the body of every failed request.
type Error struct {
	Error string `json:"error"`
}

// Backend is what the server serves; the node implements it.
type Backend interface {
	Messaging
	Buddies
	Identity() Identity
	Info(ctx context.Context) (NodeInfo, error)
	Subscribe() (events <-chan Event, cancel func())
}

// Messaging is sending, history and the outbox.
type Messaging interface {
	Send(ctx context.Context, req SendRequest) (Message, error)
	History(ctx context.Context, peer string, limit int) ([]Message, error)
	Outbox(ctx context.Context) ([]Message, error)
	Inbox(ctx context.Context) (InboxView, error)
}

// Buddies is the buddy list: contacts, presence, visibility and requests.
type Buddies interface {
	Contacts(ctx context.Context) ([]Contact, error)
	AddContact(ctx context.Context, c Contact) (Contact, error)
	RemoveContact(ctx context.Context, name string) error
	// SetAccess sets what a peer may see: "allow", "deny", or "default".
	SetAccess(ctx context.Context, peer, access string) error
	MyStatus(ctx context.Context) (MyStatus, error)
	SetStatus(ctx context.Context, req StatusRequest) (MyStatus, error)
	SetVisibility(ctx context.Context, mode string) (MyStatus, error)
	Whois(ctx context.Context, peer string) (Presence, error)
	Requests(ctx context.Context) ([]Request, error)
	// AnswerRequest accepts (as a contact named name), denies or blocks.
	AnswerRequest(ctx context.Context, peer, action, name string) error
}

// InputError is a request the user must correct; the server answers it
// with 400 and its text.
type InputError struct{ Msg string }

func (e *InputError) Error() string { return e.Msg }

// BadInput makes an InputError.
func BadInput(msg string) error { return &InputError{Msg: msg} }

// IsInput reports whether err is the user's to fix.
func IsInput(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}
