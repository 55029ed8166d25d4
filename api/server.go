package api

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// maxRequestBody bounds a request body; a message is at most 32 KiB of text.
const maxRequestBody = 256 << 10

// Server serves a Backend on a loopback address.
type Server struct {
	backend Backend
	token   string
	log     *slog.Logger
	srv     *http.Server
	ln      net.Listener
	quit    chan struct{} // closed by Close, ends event streams
	closing sync.Once
}

// NewServer listens on addr (host:port; port 0 picks one) and prepares to
// serve b. Only loopback addresses are accepted: the API is for this
// machine's user.
func NewServer(addr string, b Backend, log *slog.Logger) (*Server, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("api: address %q: %v (want HOST:PORT, e.g. 127.0.0.1:0)", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("api: address %q is not a loopback address; the local API must not be reachable from the network", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("api: listen on %s: %w", addr, err)
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		ln.Close()
		return nil, err
	}
	s := &Server{backend: b, token: hex.EncodeToString(tok), log: log, ln: ln, quit: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/id", s.getID)
	mux.HandleFunc("GET /v1/node", func(w http.ResponseWriter, r *http.Request) {
		info, err := s.backend.Info(r.Context())
		s.answer(w, info, err)
	})
	mux.HandleFunc("POST /v1/messages", s.postMessage)
	mux.HandleFunc("GET /v1/history/{peer}", s.getHistory)
	mux.HandleFunc("GET /v1/outbox", s.getOutbox)
	mux.HandleFunc("GET /v1/inbox", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.backend.Inbox(r.Context())
		s.answer(w, v, err)
	})
	mux.HandleFunc("GET /v1/contacts", s.getContacts)
	mux.HandleFunc("POST /v1/contacts", s.postContact)
	mux.HandleFunc("DELETE /v1/contacts/{name}", s.deleteContact)
	mux.HandleFunc("GET /v1/events", s.getEvents)
	mux.HandleFunc("POST /v1/contacts/{peer}/access", s.postAccess)
	mux.HandleFunc("GET /v1/status", s.getStatus)
	mux.HandleFunc("PUT /v1/status", s.putStatus)
	mux.HandleFunc("PUT /v1/visibility", s.putVisibility)
	mux.HandleFunc("GET /v1/whois/{peer}", s.getWhois)
	mux.HandleFunc("GET /v1/requests", s.getRequests)
	mux.HandleFunc("POST /v1/requests/{peer}", s.postRequest)
	s.srv = &http.Server{Handler: s.auth(mux), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// URL is the base URL clients use.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Token is the bearer token clients must present.
func (s *Server) Token() string { return s.token }

// Serve serves until Close.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops the server; event streams are cut. It may be called again.
func (s *Server) Close() error {
	var err error
	s.closing.Do(func() {
		close(s.quit)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err = s.srv.Shutdown(ctx); err != nil {
			err = s.srv.Close()
		}
	})
	return err
}

// WriteFiles publishes the server in home: the token first (0600), then the
// URL, each by atomic rename, because the URL file's presence means ready.
func (s *Server) WriteFiles(home string) error {
	if err := writeAtomic(filepath.Join(home, TokenFile), []byte(s.token+"\n")); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(home, URLFile), []byte(s.URL()+"\n"))
}

// RemoveFiles undoes WriteFiles.
func RemoveFiles(home string) {
	os.Remove(filepath.Join(home, URLFile))
	os.Remove(filepath.Join(home, TokenFile))
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("api: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return nil
}

func (s *Server) auth(next http.Handler) http.Handler {
	want := []byte("Bearer " + s.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			writeError(w, http.StatusUnauthorized, "missing or wrong API token")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, Error{Error: msg})
}

func (s *Server) fail(w http.ResponseWriter, err error) {
	if IsInput(err) {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.log.Error("api: request failed", "err", err)
	writeError(w, http.StatusInternalServerError, err.Error())
}

func (s *Server) getID(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.backend.Identity())
}

func (s *Server) postMessage(w http.ResponseWriter, r *http.Request) {
	var req SendRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return
	}
	m, err := s.backend.Send(r.Context(), req)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

func (s *Server) getHistory(w http.ResponseWriter, r *http.Request) {
	limit := 0
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "limit must be a whole number >= 0")
			return
		}
		limit = n
	}
	ms, err := s.backend.History(r.Context(), r.PathValue("peer"), limit)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ms)
}

func (s *Server) getOutbox(w http.ResponseWriter, r *http.Request) {
	ms, err := s.backend.Outbox(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ms)
}

func (s *Server) getContacts(w http.ResponseWriter, r *http.Request) {
	cs, err := s.backend.Contacts(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, cs)
}

func (s *Server) postContact(w http.ResponseWriter, r *http.Request) {
	var c Contact
	if err := json.NewDecoder(r.Body).Decode(&c); err != nil {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return
	}
	c, err := s.backend.AddContact(r.Context(), c)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) deleteContact(w http.ResponseWriter, r *http.Request) {
	if err := s.backend.RemoveContact(r.Context(), r.PathValue("name")); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// answer writes v, or the error.
func (s *Server) answer(w http.ResponseWriter, v any, err error) {
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// decode reads a JSON body into v, answering 400 itself when it cannot.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return false
	}
	return true
}

func (s *Server) postAccess(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Access string `json:"access"`
	}
	if decode(w, r, &req) {
		s.answer(w, struct{}{}, s.backend.SetAccess(r.Context(), r.PathValue("peer"), req.Access))
	}
}

func (s *Server) getStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.backend.MyStatus(r.Context())
	s.answer(w, st, err)
}

func (s *Server) putStatus(w http.ResponseWriter, r *http.Request) {
	var req StatusRequest
	if decode(w, r, &req) {
		st, err := s.backend.SetStatus(r.Context(), req)
		s.answer(w, st, err)
	}
}

func (s *Server) putVisibility(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Mode string `json:"mode"`
	}
	if decode(w, r, &req) {
		st, err := s.backend.SetVisibility(r.Context(), req.Mode)
		s.answer(w, st, err)
	}
}

func (s *Server) getWhois(w http.ResponseWriter, r *http.Request) {
	p, err := s.backend.Whois(r.Context(), r.PathValue("peer"))
	s.answer(w, p, err)
}

func (s *Server) getRequests(w http.ResponseWriter, r *http.Request) {
	rs, err := s.backend.Requests(r.Context())
	s.answer(w, rs, err)
}

func (s *Server) postRequest(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Action string `json:"action"`
		Name   string `json:"name"`
	}
	if decode(w, r, &req) {
		s.answer(w, struct{}{}, s.backend.AnswerRequest(r.Context(), r.PathValue("peer"), req.Action, req.Name))
	}
}

// getEvents streams events as Server-Sent Events until the client leaves or
// the server closes.
func (s *Server) getEvents(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	events, cancel := s.backend.Subscribe()
	defer cancel()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": parley events\n\n")
	flusher.Flush()
	keepalive := time.NewTicker(30 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.quit:
			return
		case <-keepalive.C:
			fmt.Fprint(w, ": keepalive\n\n")
		case e, ok := <-events:
			if !ok {
				return
			}
			data, _ := json.Marshal(e)
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.Type, data)
		}
		flusher.Flush()
	}
}
