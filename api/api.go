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

// Message is one history entry as the API shows it.
type Message struct {
	ID        string `json:"id"` // hex
	Peer      string `json:"peer"`
	Name      string `json:"name,omitempty"` // the peer's petname
	Direction string `json:"direction"`      // "in" or "out"
	SentAt    string `json:"sent_at"`        // RFC 3339, the sender's clock
	At        string `json:"at"`             // RFC 3339, when this node stored it
	Text      string `json:"text"`
	State     string `json:"state"` // queued, delivered, failed, received
	Reason    string `json:"reason,omitempty"`
}

// SendRequest asks the daemon to send a text.
type SendRequest struct {
	To   string `json:"to"` // peer ID or petname
	Text string `json:"text"`
	// WaitMillis is how long to wait for delivery before answering with
	// the message still queued; 0 means the daemon's default.
	WaitMillis int `json:"wait_ms,omitempty"`
}

// Contact is a petname and the peer it names.
type Contact struct {
	Name string `json:"name"`
	ID   string `json:"id"`
}

// Event is one live event: a message arrived ("message") or an outgoing
// message changed state ("state").
type Event struct {
	Type    string  `json:"type"`
	Message Message `json:"message"`
}

// Error is the body of every failed request.
type Error struct {
	Error string `json:"error"`
}

// Backend is what the server serves; the node implements it.
type Backend interface {
	Identity() Identity
	Send(ctx context.Context, req SendRequest) (Message, error)
	History(ctx context.Context, peer string, limit int) ([]Message, error)
	Outbox(ctx context.Context) ([]Message, error)
	Contacts(ctx context.Context) ([]Contact, error)
	AddContact(ctx context.Context, c Contact) (Contact, error)
	RemoveContact(ctx context.Context, name string) error
	Subscribe() (events <-chan Event, cancel func())
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
