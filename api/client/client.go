// Package client is the Go client of a running Parley daemon's local API.
// The CLI uses nothing else to talk to the daemon.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/parley-p2p/parley/api"
)

// ErrNoDaemon means no daemon is running for the home.
var ErrNoDaemon = errors.New("no parley daemon is running")

// Client talks to one daemon.
type Client struct {
	base  string
	token string
	home  string
	http  *http.Client
}

// New finds the daemon of home from the files it wrote there.
func New(home string) (*Client, error) {
	u, err := os.ReadFile(filepath.Join(home, api.URLFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w for %s: start one with 'parley run --home %s'", ErrNoDaemon, home, home)
	}
	if err != nil {
		return nil, err
	}
	tok, err := os.ReadFile(filepath.Join(home, api.TokenFile))
	if err != nil {
		return nil, fmt.Errorf("cannot read the API token of %s: %w", home, err)
	}
	return &Client{base: strings.TrimSpace(string(u)), token: strings.TrimSpace(string(tok)), home: home, http: &http.Client{}}, nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w for %s: the daemon at %s does not answer (did it stop or crash?); start it with 'parley run --home %s'", ErrNoDaemon, c.home, c.base, c.home)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e api.Error
		if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("daemon answered %s", resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Identity returns the node's peer ID and listen addresses.
func (c *Client) Identity(ctx context.Context) (api.Identity, error) {
	var id api.Identity
	return id, c.do(ctx, http.MethodGet, "/v1/id", nil, &id)
}

// Send sends a text and returns the message in the state it reached.
func (c *Client) Send(ctx context.Context, req api.SendRequest) (api.Message, error) {
	var m api.Message
	return m, c.do(ctx, http.MethodPost, "/v1/messages", req, &m)
}

// History returns the conversation with peer (an ID or petname), oldest first.
func (c *Client) History(ctx context.Context, peer string, limit int) ([]api.Message, error) {
	var ms []api.Message
	path := "/v1/history/" + url.PathEscape(peer)
	if limit > 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	return ms, c.do(ctx, http.MethodGet, path, nil, &ms)
}

// Outbox returns the messages not yet delivered.
func (c *Client) Outbox(ctx context.Context) ([]api.Message, error) {
	var ms []api.Message
	return ms, c.do(ctx, http.MethodGet, "/v1/outbox", nil, &ms)
}

// Contacts lists the contacts.
func (c *Client) Contacts(ctx context.Context) ([]api.Contact, error) {
	var cs []api.Contact
	return cs, c.do(ctx, http.MethodGet, "/v1/contacts", nil, &cs)
}

// AddContact names a peer.
func (c *Client) AddContact(ctx context.Context, ct api.Contact) (api.Contact, error) {
	var out api.Contact
	return out, c.do(ctx, http.MethodPost, "/v1/contacts", ct, &out)
}

// RemoveContact forgets a petname.
func (c *Client) RemoveContact(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/contacts/"+url.PathEscape(name), nil, nil)
}

// Events streams live events to fn until ctx ends or the daemon stops.
func (c *Client) Events(ctx context.Context, fn func(api.Event)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/events", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w for %s: %v", ErrNoDaemon, c.home, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("daemon answered %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			var e api.Event
			if err := json.Unmarshal([]byte(data), &e); err != nil {
				return fmt.Errorf("bad event from daemon: %w", err)
			}
			fn(e)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return sc.Err()
}

// SetAccess sets what a peer may see of the user: "allow", "deny" or "default".
func (c *Client) SetAccess(ctx context.Context, peer, access string) error {
	return c.do(ctx, http.MethodPost, "/v1/contacts/"+url.PathEscape(peer)+"/access", map[string]string{"access": access}, nil)
}

// MyStatus returns the user's own status.
func (c *Client) MyStatus(ctx context.Context) (api.MyStatus, error) {
	var st api.MyStatus
	return st, c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
}

// SetStatus sets the user's status and note.
func (c *Client) SetStatus(ctx context.Context, req api.StatusRequest) (api.MyStatus, error) {
	var st api.MyStatus
	return st, c.do(ctx, http.MethodPut, "/v1/status", req, &st)
}

// SetVisibility sets who may see the user.
func (c *Client) SetVisibility(ctx context.Context, mode string) (api.MyStatus, error) {
	var st api.MyStatus
	return st, c.do(ctx, http.MethodPut, "/v1/visibility", map[string]string{"mode": mode}, &st)
}

// Whois resolves a peer's presence.
func (c *Client) Whois(ctx context.Context, peer string) (api.Presence, error) {
	var p api.Presence
	return p, c.do(ctx, http.MethodGet, "/v1/whois/"+url.PathEscape(peer), nil, &p)
}

// Requests lists contact requests.
func (c *Client) Requests(ctx context.Context) ([]api.Request, error) {
	var rs []api.Request
	return rs, c.do(ctx, http.MethodGet, "/v1/requests", nil, &rs)
}

// AnswerRequest accepts, denies or blocks a contact request.
func (c *Client) AnswerRequest(ctx context.Context, peer, action, name string) error {
	return c.do(ctx, http.MethodPost, "/v1/requests/"+url.PathEscape(peer), map[string]string{"action": action, "name": name}, nil)
}

// Inbox returns what this node holds for others and its own outbox.
func (c *Client) Inbox(ctx context.Context) (api.InboxView, error) {
	var v api.InboxView
	return v, c.do(ctx, http.MethodGet, "/v1/inbox", nil, &v)
}

// Info returns how the node is doing.
func (c *Client) Info(ctx context.Context) (api.NodeInfo, error) {
	var v api.NodeInfo
	return v, c.do(ctx, http.MethodGet, "/v1/node", nil, &v)
}
