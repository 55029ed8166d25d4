package inbox

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/seal"
)

// Sender leaves messages with a recipient's replicas: sealed end to end,
// then boxed for the recipient alone, so a replica learns only who it is
// for, its size and when it came.
type Sender struct {
	client *Client
	keys   seal.Sealer
	ttl    time.Duration

	mu    sync.Mutex
	boxed map[string][]byte // message id -> item, so a retry deposits the same item
}

// maxBoxed bounds the cache of boxed items.
const maxBoxed = 4096

// NewSender returns a Sender; ttl 0 lets replicas use their default.
func NewSender(c *Client, keys seal.Sealer, ttl time.Duration) *Sender {
	return &Sender{client: c, keys: keys, ttl: ttl, boxed: map[string][]byte{}}
}

// Leave deposits m with its recipient's replicas.
func (s *Sender) Leave(ctx context.Context, m *pb.Message) (Stored, error) {
	item, err := s.item(m)
	if err != nil {
		return Stored{}, err
	}
	return s.client.Deposit(ctx, peer.ID(m.To), item, s.ttl)
}

func (s *Sender) item(m *pb.Message) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if it, ok := s.boxed[string(m.Id)]; ok {
		return it, nil
	}
	env, err := s.keys.Seal(m)
	if err != nil {
		return nil, err
	}
	it, err := seal.Box(env, peer.ID(m.To))
	if err != nil {
		return nil, err
	}
	if len(s.boxed) >= maxBoxed {
		for k := range s.boxed {
			delete(s.boxed, k)
			break
		}
	}
	s.boxed[string(m.Id)] = it
	return it, nil
}
