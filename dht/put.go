package dht

import (
	"context"
	"fmt"
	"sync"
	"time"

	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	kadpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio/pbio"
)

// ProtocolID is the DHT's protocol on the wire.
const ProtocolID = Prefix + "/kad/1.0.0"

const (
	maxMessage = 4 << 20 // kad-dht's own bound on a message
	putTimeout = 10 * time.Second
)

// Records stores records at the peers closest to their key, counting the
// ones that accepted each, and fetches them. kad-dht's PutValue cannot be
// used for storing: it returns nil even when no peer stored the value.
type Records struct {
	dht *kaddht.IpfsDHT
	pm  *kadpb.ProtocolMessenger
}

// NewRecords returns Records that looks peers up in d and talks to them
// through h.
func NewRecords(h host.Host, d *kaddht.IpfsDHT) *Records {
	pm, _ := kadpb.NewProtocolMessenger(sender{h}) // no options: cannot fail
	return &Records{dht: d, pm: pm}
}

// GetValue fetches the best valid record under key (kad-dht validates and
// selects among the answers).
func (p *Records) GetValue(ctx context.Context, key string) ([]byte, error) {
	return p.dht.GetValue(ctx, key)
}

// Put stores value under key at the closest peers found. It returns how
// many accepted (a peer answers a PUT_VALUE by echoing the record only after
// its validator passed and it stored it) and how many were asked.
func (p *Records) Put(ctx context.Context, key string, value []byte) (accepted, asked int, err error) {
	peers, err := p.dht.GetClosestPeers(ctx, key)
	if err != nil {
		return 0, 0, fmt.Errorf("dht: find peers for %q: %w", key, err)
	}
	rec := &recpb.Record{Key: []byte(key), Value: value, TimeReceived: time.Now().UTC().Format(time.RFC3339Nano)}
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
	return accepted, len(peers), nil
}

// sender carries one kad-dht request per stream.
type sender struct{ h host.Host }

func (s sender) SendRequest(ctx context.Context, p peer.ID, req *kadpb.Message) (*kadpb.Message, error) {
	str, err := s.h.NewStream(ctx, p, ProtocolID)
	if err != nil {
		return nil, err
	}
	defer str.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = str.SetDeadline(d)
	}
	if err := pbio.NewDelimitedWriter(str).WriteMsg(req); err != nil {
		str.Reset()
		return nil, err
	}
	resp := new(kadpb.Message)
	if err := pbio.NewDelimitedReader(str, maxMessage).ReadMsg(resp); err != nil {
		str.Reset()
		return nil, err
	}
	return resp, nil
}

func (s sender) SendMessage(ctx context.Context, p peer.ID, msg *kadpb.Message) error {
	str, err := s.h.NewStream(ctx, p, ProtocolID)
	if err != nil {
		return err
	}
	defer str.Close()
	if err := pbio.NewDelimitedWriter(str).WriteMsg(msg); err != nil {
		str.Reset()
		return err
	}
	return nil
}
