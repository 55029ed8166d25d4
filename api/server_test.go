package api_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-p2p/parley/api"
	"github.com/parley-p2p/parley/api/client"
)

// fake is a Backend with canned answers; the API layer is under test here,
// the real node is in node's and cmd/parley's tests.
type fake struct {
	hub *api.Hub
}

func (f *fake) Info(context.Context) (api.NodeInfo, error) { return api.NodeInfo{}, nil }
func (f *fake) Identity() api.Identity {
	return api.Identity{ID: "me", Addrs: []string{"/ip4/127.0.0.1/tcp/1"}}
}
func (f *fake) Send(_ context.Context, r api.SendRequest) (api.Message, error) {
	if r.Text == "" {
		return api.Message{}, api.BadInput("the message is empty")
	}
	if r.Text == "boom" {
		return api.Message{}, errors.New("disk on fire")
	}
	m := api.Message{ID: "01", Peer: r.To, Direction: "out", Text: r.Text, State: "delivered"}
	f.hub.Publish(api.Event{Type: "state", Message: &m})
	return m, nil
}
func (f *fake) History(context.Context, string, int) ([]api.Message, error) { return nil, nil }
func (f *fake) Outbox(context.Context) ([]api.Message, error)               { return nil, nil }
func (f *fake) Inbox(context.Context) (api.InboxView, error)                { return api.InboxView{}, nil }
func (f *fake) Contacts(context.Context) ([]api.Contact, error)             { return nil, nil }
func (f *fake) AddContact(_ context.Context, c api.Contact) (api.Contact, error) {
	return c, nil
}
func (f *fake) RemoveContact(context.Context, string) error     { return nil }
func (f *fake) SetAccess(context.Context, string, string) error { return nil }
func (f *fake) MyStatus(context.Context) (api.MyStatus, error)  { return api.MyStatus{}, nil }
func (f *fake) SetStatus(context.Context, api.StatusRequest) (api.MyStatus, error) {
	return api.MyStatus{}, nil
}
func (f *fake) SetVisibility(context.Context, string) (api.MyStatus, error) {
	return api.MyStatus{}, nil
}
func (f *fake) Whois(context.Context, string) (api.Presence, error)         { return api.Presence{}, nil }
func (f *fake) Requests(context.Context) ([]api.Request, error)             { return nil, nil }
func (f *fake) AnswerRequest(context.Context, string, string, string) error { return nil }
func (f *fake) Subscribe() (<-chan api.Event, func())                       { return f.hub.Subscribe() }

func serve(t *testing.T) (*api.Server, string) {
	t.Helper()
	srv, err := api.NewServer("127.0.0.1:0", &fake{hub: api.NewHub()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	home := t.TempDir()
	if err := srv.WriteFiles(home); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, home
}

func TestTokenRequired(t *testing.T) {
	srv, home := serve(t)
	for _, tok := range []string{"", "Bearer wrong", srv.Token()} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL()+"/v1/id", nil)
		if tok != "" {
			req.Header.Set("Authorization", tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("token %q: status %d, want 401", tok, resp.StatusCode)
		}
	}
	st, err := os.Stat(filepath.Join(home, api.TokenFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", st, err)
	}
	c, err := client.New(home)
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.Identity(context.Background())
	if err != nil || id.ID != "me" {
		t.Fatalf("identity with the right token: %v %v", id, err)
	}
}

func TestErrorsReachTheClient(t *testing.T) {
	_, home := serve(t)
	c, _ := client.New(home)
	if _, err := c.Send(context.Background(), api.SendRequest{To: "x"}); err == nil || err.Error() != "the message is empty" {
		t.Fatalf("input error: %v", err)
	}
	if _, err := c.Send(context.Background(), api.SendRequest{To: "x", Text: "boom"}); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("internal error: %v", err)
	}
}

func TestEventsStream(t *testing.T) {
	srv, home := serve(t)
	c, _ := client.New(home)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan api.Event, 1)
	done := make(chan error, 1)
	go func() { done <- c.Events(ctx, func(e api.Event) { got <- e }) }()
	// Send until the subscription is in place and an event comes through.
	deadline := time.After(10 * time.Second)
	for {
		if _, err := c.Send(context.Background(), api.SendRequest{To: "bob", Text: "hi"}); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-got:
			if e.Type != "state" || e.Message == nil || e.Message.Text != "hi" {
				t.Fatalf("event %+v", e)
			}
			// Closing the server ends the stream.
			srv.Close()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("event stream outlived the server")
			}
			return
		case <-deadline:
			t.Fatal("no event arrived")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestNoDaemon(t *testing.T) {
	_, err := client.New(t.TempDir())
	if !errors.Is(err, client.ErrNoDaemon) {
		t.Fatalf("client.New on an empty home: %v", err)
	}
	if _, err := api.NewServer("0.0.0.0:0", &fake{hub: api.NewHub()}, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("API server accepted a non-loopback address")
	}
}
