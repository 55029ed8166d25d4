package inbox

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio/pbio"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/internal/exchange"
	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/store"
)

// ProtocolID is the replica protocol.
const ProtocolID protocol.ID = "/parley/inbox/1.0.0"

const (
	// MaxFrame bounds one request or response: a batch of items.
	MaxFrame = 4 << 20
	// MaxBatch bounds the ids in one fetch or delete.
	MaxBatch = 64
	// IDSize is the size of an item id.
	IDSize = 16
	// maxListData bounds the item data sent with a list.
	maxListData = 1 << 20

	ioTimeout     = 15 * time.Second
	receiptDomain = "parley/inbox-receipt/v1"
)

// Key is the DHT key whose closest peers hold p's inbox. It is the key p's
// presence record is stored under (presence.Key): one neighbourhood per
// user, so the lookup that stores the record also finds the replicas, and
// a recipient need not walk the DHT again to collect.
func Key(p peer.ID) string { return "/presence/" + string(p) }

// ItemID names an item: the first 16 bytes of SHA-256 of its bytes, so
// every replica and the recipient agree on it.
func ItemID(item []byte) []byte {
	h := sha256.Sum256(item)
	return h[:IDSize]
}

// Closest finds the peers closest to a DHT key (the DHT's lookup).
type Closest func(ctx context.Context, key string) ([]peer.ID, error)

// ReplicaConfig says how to build a replica.
type ReplicaConfig struct {
	Host    host.Host
	Key     crypto.PrivKey // signs receipts
	Store   *store.Store
	Closest Closest
	// Nearest, when set, gives the peers this node's routing table holds
	// nearest a key, without a lookup (see rebalance).
	Nearest func(key string, n int) []peer.ID
	Limits  Limits
	R       int           // replicas per recipient, for handoff; default 5
	Sweep   time.Duration // expiry sweep and handoff check; default 5 min
	Now     func() time.Time
	Logger  *slog.Logger
}

// Replica holds items for other users.
type Replica struct {
	cfg ReplicaConfig

	mu     sync.Mutex
	ledger *ledger

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewReplica loads what the store holds; Start serves.
func NewReplica(cfg ReplicaConfig) (*Replica, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.R == 0 {
		cfg.R = 5
	}
	if cfg.Sweep == 0 {
		cfg.Sweep = 5 * time.Minute
	}
	cfg.Limits = cfg.Limits.withDefaults()
	held, err := cfg.Store.HeldTotals()
	if err != nil {
		return nil, err
	}
	return &Replica{cfg: cfg, ledger: newLedger(cfg.Limits, held)}, nil
}

// Start registers the protocol and starts the sweep.
func (r *Replica) Start(ctx context.Context) error {
	ctx, r.cancel = context.WithCancel(ctx)
	r.cfg.Host.SetStreamHandler(ProtocolID, r.handle)
	r.wg.Add(1)
	go r.sweepLoop(ctx)
	return nil
}

// Close stops serving and waits for the sweep.
func (r *Replica) Close() error {
	r.cfg.Host.RemoveStreamHandler(ProtocolID)
	if r.cancel != nil {
		r.cancel()
	}
	r.wg.Wait()
	return nil
}

// Totals is what the replica holds, per recipient.
func (r *Replica) Totals() map[peer.ID]store.Totals {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[peer.ID]store.Totals, len(r.ledger.recipients))
	for p, t := range r.ledger.recipients {
		out[p] = t
	}
	return out
}

func (r *Replica) handle(str network.Stream) {
	defer str.Close()
	remote := str.Conn().RemotePeer()
	_ = str.SetDeadline(r.cfg.Now().Add(ioTimeout))
	var req pb.InboxRequest
	if err := exchange.ReadMsg(str, MaxFrame, &req); err != nil {
		r.cfg.Logger.Debug("inbox: bad request", "peer", remote, "err", err)
		str.Reset()
		return
	}
	resp, err := r.serve(remote, &req)
	if err != nil {
		resp = &pb.InboxResponse{Status: pb.InboxResponse_REFUSED, Reason: err.Error()}
		r.cfg.Logger.Debug("inbox: refused", "peer", remote, "err", err)
	}
	if err := pbio.NewDelimitedWriter(str).WriteMsg(resp); err != nil {
		str.Reset()
	}
}

func ok() *pb.InboxResponse { return &pb.InboxResponse{Status: pb.InboxResponse_OK} }

func (r *Replica) serve(remote peer.ID, req *pb.InboxRequest) (*pb.InboxResponse, error) {
	switch op := req.Op.(type) {
	case *pb.InboxRequest_Deposit:
		return r.deposit(remote, op.Deposit)
	case *pb.InboxRequest_Handoff:
		return r.handoff(remote, op.Handoff)
	case *pb.InboxRequest_List:
		items, err := r.cfg.Store.Held(remote, nil, op.List.WithData)
		if err != nil {
			return nil, err
		}
		budget := min(int(op.List.MaxBytes), maxListData)
		for i := range items { // data only as far as the budget goes
			if budget -= len(items[i].Data); budget < 0 {
				items[i].Data = nil
			}
		}
		return itemsResponse(items), nil
	case *pb.InboxRequest_Fetch:
		if len(op.Fetch.Ids) > MaxBatch {
			return nil, fmt.Errorf("inbox: fetch of %d items, at most %d at a time", len(op.Fetch.Ids), MaxBatch)
		}
		// Only the authenticated recipient's own items: the remote peer is
		// the bucket looked in.
		items, err := r.cfg.Store.Held(remote, op.Fetch.Ids, true)
		return itemsResponse(items), err
	case *pb.InboxRequest_Delete:
		if len(op.Delete.Ids) > MaxBatch {
			return nil, fmt.Errorf("inbox: delete of %d items, at most %d at a time", len(op.Delete.Ids), MaxBatch)
		}
		return ok(), r.release(remote, op.Delete.Ids)
	}
	return nil, errors.New("inbox: unknown request")
}

func itemsResponse(items []store.HeldItem) *pb.InboxResponse {
	resp := ok()
	for _, it := range items {
		resp.Items = append(resp.Items, &pb.ItemInfo{Id: it.ID, Size: uint32(it.Size), ExpiresAt: it.Expires.UnixMilli(), Data: it.Data})
	}
	return resp
}

func (r *Replica) deposit(depositor peer.ID, d *pb.Deposit) (*pb.InboxResponse, error) {
	recipient, err := peer.IDFromBytes(d.Recipient)
	if err != nil {
		return nil, fmt.Errorf("%w: recipient: %v", ErrMalformed, err)
	}
	now := r.cfg.Now()
	ttl := time.Duration(d.TtlSeconds) * time.Second
	if ttl == 0 {
		ttl = r.cfg.Limits.DefaultTTL
	}
	if ttl > r.cfg.Limits.MaxTTL {
		return nil, fmt.Errorf("%w: asked %v, at most %v", ErrTTL, ttl, r.cfg.Limits.MaxTTL)
	}
	expires := now.Add(ttl).Truncate(time.Millisecond)
	id, err := r.hold(depositor, recipient, d.Item, expires, now)
	if err != nil {
		return nil, err
	}
	rc := &pb.Receipt{Id: id, Recipient: d.Recipient, ExpiresAt: expires.UnixMilli(), Replica: []byte(r.cfg.Host.ID())}
	if rc.Signature, err = r.cfg.Key.Sign(receiptBytes(rc)); err != nil {
		return nil, err
	}
	resp := ok()
	resp.Receipt = rc
	return resp, nil
}

func (r *Replica) handoff(from peer.ID, h *pb.Handoff) (*pb.InboxResponse, error) {
	recipient, err := peer.IDFromBytes(h.Recipient)
	if err != nil {
		return nil, fmt.Errorf("%w: recipient: %v", ErrMalformed, err)
	}
	now := r.cfg.Now()
	expires := time.UnixMilli(h.ExpiresAt)
	if !expires.After(now) || expires.After(now.Add(r.cfg.Limits.MaxTTL)) {
		return nil, fmt.Errorf("%w: handed-off item expires %v", ErrTTL, expires)
	}
	// A handoff is not a deposit: no depositor rate, only the holding caps.
	if _, err := r.hold("", recipient, h.Item, expires, now); err != nil {
		return nil, err
	}
	return ok(), nil
}

// hold admits and stores an item, and returns its id.
func (r *Replica) hold(depositor, recipient peer.ID, item []byte, expires, now time.Time) ([]byte, error) {
	if err := checkItem(item); err != nil {
		return nil, err
	}
	if recipient == r.cfg.Host.ID() {
		return nil, fmt.Errorf("%w: this replica is the recipient", ErrMalformed)
	}
	id := ItemID(item)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.ledger.admit(depositor, recipient, len(item), now); err != nil {
		return nil, err
	}
	added, err := r.cfg.Store.Hold(recipient, store.HeldItem{ID: id, Data: item, Expires: expires, Received: now})
	if err != nil {
		return nil, err
	}
	if added {
		r.ledger.held(depositor, recipient, len(item), now)
	}
	return id, nil
}

// release drops items of recipient from the store and the ledger.
func (r *Replica) release(recipient peer.ID, ids [][]byte) error {
	items, err := r.cfg.Store.Held(recipient, ids, true)
	if err != nil {
		return err
	}
	var size int64
	for _, it := range items {
		size += int64(len(it.Data))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n, err := r.cfg.Store.Release(recipient, ids)
	if err != nil {
		return err
	}
	if n > 0 {
		r.ledger.released(recipient, n, size)
	}
	return nil
}

// receiptBytes is what a replica signs: the domain, the item id, the
// recipient, the expiry and the replica's own peer ID.
func receiptBytes(rc *pb.Receipt) []byte {
	b := []byte(receiptDomain)
	for _, f := range [][]byte{rc.Id, rc.Recipient} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(rc.ExpiresAt))
	b = binary.AppendUvarint(b, uint64(len(rc.Replica)))
	return append(b, rc.Replica...)
}

// validItem checks the shape of a sealed item.
func validItem(data []byte) error {
	var it pb.SealedItem
	if err := proto.Unmarshal(data, &it); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(it.Ephemeral) != 32 || len(it.Nonce) != 24 || len(it.Ciphertext) < 16 {
		return fmt.Errorf("%w: not a sealed item", ErrMalformed)
	}
	return nil
}
