package dht

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	kadpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p-kad-dht/records"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/internal/exchange"
)

// ProtocolID is the DHT's protocol on the wire.
const ProtocolID = Prefix + "/kad/1.0.0"

const (
	maxMessage = 4 << 20 // kad-dht's own bound on a message
	putTimeout = 10 * time.Second
)

// recordAge is how long a stored record is kept at most; presence records
// expire well before (their validator enforces their own expiry).
const recordAge = 36 * time.Hour

// Put stores value under key here and at the closest peers found, and
// returns how many of those peers accepted it (a peer answers a PUT_VALUE by
// echoing the record only after its validator passed and it stored it) and
// how many were asked. kad-dht's own PutValue cannot count: it returns nil
// even when no peer stored the value.
func (p *DHT) Put(ctx context.Context, key string, value []byte) (accepted int, asked []peer.ID, err error) {
	rec := newRecord(key, value)
	if err := p.putHere(ctx, key, rec); err != nil {
		return 0, nil, err
	}
	peers, err := p.Closest(ctx, key)
	if err != nil {
		return 0, nil, fmt.Errorf("dht: find peers for %q: %w", key, err)
	}
	return p.putTo(ctx, rec, peers), peers, nil
}

// PutTo stores value under key here and at the given peers — found by an
// earlier lookup — with no lookup, and returns how many accepted it.
func (p *DHT) PutTo(ctx context.Context, key string, value []byte, peers []peer.ID) int {
	rec := newRecord(key, value)
	if err := p.putHere(ctx, key, rec); err != nil {
		return 0
	}
	return p.putTo(ctx, rec, peers)
}

// putHere keeps a server's own copy: it answers queries for records near
// it too, and its copy also refuses an older record of ours.
func (p *DHT) putHere(ctx context.Context, key string, rec *recpb.Record) error {
	if p.Mode() != kaddht.ModeServer {
		return nil
	}
	if err := p.local.Put(ctx, key, rec); err != nil && !errors.Is(err, records.ErrOldRecord) {
		return fmt.Errorf("dht: store %q here: %w", key, err)
	}
	return nil
}

func newRecord(key string, value []byte) *recpb.Record {
	return &recpb.Record{Key: []byte(key), Value: value, TimeReceived: time.Now().UTC().Format(time.RFC3339Nano)}
}

// putTo sends PUT_VALUE to every peer at once and counts the acceptances.
func (p *DHT) putTo(ctx context.Context, rec *recpb.Record, peers []peer.ID) (accepted int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, q := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, putTimeout)
			defer cancel()
			if p.pm.PutValue(cctx, q, rec) == nil {
				mu.Lock()
				accepted++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return accepted
}

// sender carries one kad-dht request per stream.
type sender struct{ h host.Host }

func (s sender) SendRequest(ctx context.Context, p peer.ID, req *kadpb.Message) (*kadpb.Message, error) {
	resp := new(kadpb.Message)
	return resp, exchange.Request(ctx, s.h, p, ProtocolID, req, resp, maxMessage)
}

func (s sender) SendMessage(ctx context.Context, p peer.ID, msg *kadpb.Message) error {
	return exchange.Send(ctx, s.h, p, ProtocolID, msg)
}
