package inbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/parley-p2p/parley/internal/exchange"
	"github.com/parley-p2p/parley/internal/pb"
)

// Client talks to replicas: senders deposit, recipients list, fetch and
// delete.
type Client struct {
	host    host.Host
	closest Closest
	r       int
}

// NewClient returns a client that finds replicas with closest and keeps r
// of them per recipient.
func NewClient(h host.Host, closest Closest, r int) *Client {
	if r <= 0 {
		r = 5
	}
	return &Client{host: h, closest: closest, r: r}
}

// R is how many replicas the client keeps a message with.
func (c *Client) R() int { return c.r }

// Replicas are the r peers closest to recipient's inbox key, leaving out
// this node and the recipient (fewer in a smaller swarm).
func (c *Client) Replicas(ctx context.Context, recipient peer.ID) ([]peer.ID, error) {
	ps, err := c.closest(ctx, Key(recipient))
	if err != nil {
		return nil, fmt.Errorf("inbox: find replicas: %w", err)
	}
	return c.pick(recipient, ps), nil
}

// pick takes recipient's replicas from the peers closest to its key,
// nearest first.
func (c *Client) pick(recipient peer.ID, closest []peer.ID) []peer.ID {
	var out []peer.ID
	for _, p := range closest {
		if p != recipient && p != c.host.ID() && len(out) < c.r {
			out = append(out, p)
		}
	}
	return out
}

// Stored is how a deposit went.
type Stored struct {
	Replicas int // replicas that stored the item and signed a receipt
	Of       int // replicas asked
}

// Deposit leaves item for recipient with every replica, in parallel, and
// counts the valid receipts.
func (c *Client) Deposit(ctx context.Context, recipient peer.ID, item []byte, ttl time.Duration) (Stored, error) {
	replicas, err := c.Replicas(ctx, recipient)
	if err != nil {
		return Stored{}, err
	}
	if len(replicas) == 0 {
		return Stored{}, errors.New("inbox: no replica peers in reach")
	}
	id := ItemID(item)
	req := &pb.InboxRequest{Op: &pb.InboxRequest_Deposit{Deposit: &pb.Deposit{
		Recipient: []byte(recipient), Item: item, TtlSeconds: uint32(ttl / time.Second),
	}}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	st := Stored{Of: len(replicas)}
	var errs []error
	for _, p := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.call(ctx, p, req)
			if err == nil {
				err = checkReceipt(resp.Receipt, p, recipient, id)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p, err))
				return
			}
			st.Replicas++
		}()
	}
	wg.Wait()
	if st.Replicas == 0 {
		return st, fmt.Errorf("inbox: no replica stored the item: %w", errors.Join(errs...))
	}
	return st, nil
}

// checkReceipt verifies that a receipt is signed by the replica asked, for
// this item and this recipient.
func checkReceipt(rc *pb.Receipt, replica, recipient peer.ID, id []byte) error {
	if rc == nil {
		return errors.New("no receipt")
	}
	if peer.ID(rc.Replica) != replica || peer.ID(rc.Recipient) != recipient || string(rc.Id) != string(id) {
		return errors.New("receipt for something else")
	}
	pub, err := replica.ExtractPublicKey()
	if err != nil {
		return err
	}
	if ok, err := pub.Verify(receiptBytes(rc), rc.Signature); err != nil || !ok {
		return errors.New("receipt signature does not verify")
	}
	return nil
}

// List asks a replica what it holds for us; with maxData > 0, it sends the
// items' data too, up to that many bytes.
func (c *Client) List(ctx context.Context, replica peer.ID, maxData int) ([]*pb.ItemInfo, error) {
	req := &pb.ListItems{WithData: maxData > 0, MaxBytes: uint32(maxData)}
	resp, err := c.call(ctx, replica, &pb.InboxRequest{Op: &pb.InboxRequest_List{List: req}})
	if err != nil {
		return nil, err
	}
	return resp.Items, nil
}

// Fetch asks a replica for items of ours by id (at most MaxBatch).
func (c *Client) Fetch(ctx context.Context, replica peer.ID, ids [][]byte) ([]*pb.ItemInfo, error) {
	resp, err := c.call(ctx, replica, &pb.InboxRequest{Op: &pb.InboxRequest_Fetch{Fetch: &pb.FetchItems{Ids: ids}}})
	if err != nil {
		return nil, err
	}
	return resp.Items, nil
}

// Delete drops items of ours at a replica (at most MaxBatch).
func (c *Client) Delete(ctx context.Context, replica peer.ID, ids [][]byte) error {
	_, err := c.call(ctx, replica, &pb.InboxRequest{Op: &pb.InboxRequest_Delete{Delete: &pb.DeleteItems{Ids: ids}}})
	return err
}

// call makes one request on a new stream and returns an OK response, or the
// replica's refusal as an error.
func (c *Client) call(ctx context.Context, p peer.ID, req *pb.InboxRequest) (*pb.InboxResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, ioTimeout)
	defer cancel()
	resp := new(pb.InboxResponse)
	if err := exchange.Request(ctx, c.host, p, ProtocolID, req, resp, MaxFrame); err != nil {
		return nil, err
	}
	if resp.Status != pb.InboxResponse_OK {
		return nil, fmt.Errorf("refused: %s", resp.Reason)
	}
	return resp, nil
}

// addrs are the addresses this node knows for p.
func (c *Client) addrs(p peer.ID) []string {
	var out []string
	for _, a := range c.host.Peerstore().Addrs(p) {
		out = append(out, a.String())
	}
	return out
}

// learnAddrs tells this node where p was last seen.
func (c *Client) learnAddrs(p peer.ID, addrs []string) {
	for _, s := range addrs {
		if a, err := ma.NewMultiaddr(s); err == nil {
			c.host.Peerstore().AddAddr(p, a, peerstore.RecentlyConnectedAddrTTL)
		}
	}
}
