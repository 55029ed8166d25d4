// Package direct delivers messages straight to a connected peer over the
// /parley/msg/1.0.0 stream protocol: the sender writes sealed envelopes, the
// recipient opens each one, persists it and only then acknowledges it by id.
//
// A sender keeps one stream per peer and writes a batch of envelopes before
// reading their acks; the recipient commits everything it has already read in
// one transaction, so throughput does not pay one disk sync per message.
package direct

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio/pbio"

	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/seal"
	"github.com/parley-p2p/parley/store"
)

// ID is the protocol ID of direct delivery.
const ID protocol.ID = "/parley/msg/1.0.0"

const (
	// MaxFrame bounds one frame on the wire; a reader rejects a larger
	// length prefix before allocating anything for it.
	MaxFrame = seal.MaxEnvelope + 512
	// IdleTimeout closes an inbound stream that sends nothing for so long.
	IdleTimeout = 2 * time.Minute
	// IOTimeout bounds one write of a batch, and the wait for its acks.
	IOTimeout = 15 * time.Second
	// maxBatchBytes bounds what the recipient holds before it commits.
	maxBatchBytes = 1 << 20
	// MaxBatch is the most envelopes a sender writes before reading acks.
	MaxBatch = 512
	// MaxBody is the largest message body that can be sent.
	MaxBody = seal.MaxBody
)

// NewID returns a fresh random message id.
func NewID() []byte { return seal.NewID() }

var (
	// ErrProtocol means the other side broke the protocol.
	ErrProtocol = errors.New("direct: protocol violation")
	// ErrClosed means the service is shutting down.
	ErrClosed = errors.New("direct: closed")
)

// History is where received messages are persisted. Receive must commit
// before it returns: the acks go out right after.
type History interface {
	Receive(msgs []*store.Message) (added []bool, err error)
}

// Result is the recipient's answer to one message.
type Result struct {
	OK     bool   // persisted at the recipient
	Reason string // why it was rejected, when !OK
}

// Service is both ends of direct delivery for one node.
type Service struct {
	host    host.Host
	sealer  seal.Sealer
	history History
	onNew   func(*store.Message)
	log     *slog.Logger
	now     func() time.Time

	// refuse, when set, names peers whose streams are reset unread (see
	// Refuse).
	refuse func(peer.ID) bool

	mu       sync.Mutex
	closed   bool
	sessions map[peer.ID]*session
	inbound  map[network.Stream]struct{}
	wg       sync.WaitGroup
}

// New returns a Service. onNew is called for every newly persisted incoming
// message; it must not block.
func New(h host.Host, s seal.Sealer, hist History, onNew func(*store.Message), log *slog.Logger) *Service {
	if onNew == nil {
		onNew = func(*store.Message) {}
	}
	return &Service{
		host: h, sealer: s, history: hist, onNew: onNew, log: log, now: time.Now,
		sessions: make(map[peer.ID]*session),
		inbound:  make(map[network.Stream]struct{}),
	}
}

// Refuse sets, before Start, which peers get no message through: their
// streams are reset unread. The connection gater refuses such peers'
// connections, but not the ones this node dialled itself (for the DHT, or
// to write to a denied peer), and a stream may come over those too.
func (s *Service) Refuse(f func(peer.ID) bool) { s.refuse = f }

// Start registers the stream handler.
func (s *Service) Start(context.Context) error {
	s.host.SetStreamHandler(ID, s.handle)
	return nil
}

// Close stops accepting streams, resets open ones and waits for every
// handler to return.
func (s *Service) Close() error {
	s.host.RemoveStreamHandler(ID)
	s.mu.Lock()
	s.closed = true
	for str := range s.inbound {
		str.Reset()
	}
	sessions := s.sessions
	s.sessions = map[peer.ID]*session{}
	s.mu.Unlock()
	for _, ss := range sessions {
		ss.str.Reset()
	}
	s.wg.Wait()
	return nil
}

func (s *Service) track(str network.Stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.inbound[str] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Service) untrack(str network.Stream) {
	s.mu.Lock()
	delete(s.inbound, str)
	s.mu.Unlock()
	s.wg.Done()
}

// handle serves one inbound stream: read what is there, persist, ack, repeat.
func (s *Service) handle(str network.Stream) {
	if !s.track(str) {
		str.Reset()
		return
	}
	defer s.untrack(str)
	remote := str.Conn().RemotePeer()
	if s.refuse != nil && s.refuse(remote) {
		str.Reset()
		return
	}
	br := bufio.NewReaderSize(str, 16<<10)
	r := pbio.NewDelimitedReader(br, MaxFrame)
	bw := bufio.NewWriterSize(str, 4<<10)
	w := pbio.NewDelimitedWriter(bw)
	for {
		_ = str.SetReadDeadline(s.now().Add(IdleTimeout))
		batch, readErr := readBatch(r, br)
		if len(batch) > 0 {
			acks, err := s.accept(remote, batch)
			if err != nil {
				s.log.Error("direct: cannot persist incoming messages; not acknowledging", "peer", remote, "err", err)
				str.Reset()
				return
			}
			_ = str.SetWriteDeadline(s.now().Add(IOTimeout))
			for _, a := range acks {
				if err := w.WriteMsg(a); err != nil {
					str.Reset()
					return
				}
			}
			if err := bw.Flush(); err != nil {
				str.Reset()
				return
			}
		}
		if readErr != nil {
			if errors.Is(readErr, io.EOF) {
				str.Close()
				return
			}
			s.log.Warn("direct: dropping stream", "peer", remote, "err", frameError(readErr))
			str.Reset()
			return
		}
	}
}

// readBatch reads one envelope, then every further one already buffered,
// up to the batch bounds. It returns what it read along with any error.
func readBatch(r pbio.Reader, br *bufio.Reader) ([]*pb.Envelope, error) {
	var batch []*pb.Envelope
	size := 0
	for {
		env := new(pb.Envelope)
		if err := r.ReadMsg(env); err != nil {
			return batch, err
		}
		batch = append(batch, env)
		size += len(env.Ciphertext)
		if br.Buffered() == 0 || len(batch) >= MaxBatch || size >= maxBatchBytes {
			return batch, nil
		}
	}
}

func frameError(err error) error {
	if errors.Is(err, io.ErrShortBuffer) {
		return fmt.Errorf("%w: frame over %d bytes", ErrProtocol, MaxFrame)
	}
	return err
}

// accept opens and persists a batch and returns one ack per envelope.
func (s *Service) accept(remote peer.ID, batch []*pb.Envelope) ([]*pb.Ack, error) {
	acks := make([]*pb.Ack, len(batch))
	var keep []*store.Message
	var where []int
	now := s.now()
	for i, env := range batch {
		acks[i] = &pb.Ack{Id: env.Id, Status: pb.Ack_OK}
		m, err := s.open(remote, env)
		if err != nil {
			s.log.Warn("direct: rejected message", "peer", remote, "err", err)
			acks[i].Status, acks[i].Reason = pb.Ack_REJECTED, err.Error()
			continue
		}
		keep = append(keep, &store.Message{
			ID: m.Id, Peer: remote, SentAt: time.UnixMilli(m.SentAt), At: now,
			Kind: int32(m.Kind), Body: m.Body, State: store.Received,
		})
		where = append(where, i)
	}
	if len(keep) == 0 {
		return acks, nil
	}
	added, err := s.history.Receive(keep)
	if err != nil {
		return nil, err
	}
	for j, m := range keep {
		if added[j] {
			s.onNew(m)
		} else {
			s.log.Debug("direct: duplicate message acknowledged again", "peer", remote, "id", fmt.Sprintf("%x", batch[where[j]].Id))
		}
	}
	return acks, nil
}

func (s *Service) open(remote peer.ID, env *pb.Envelope) (*pb.Message, error) {
	if peer.ID(env.From) != remote {
		return nil, fmt.Errorf("%w: envelope claims sender %q but came from %s", ErrProtocol, peer.ID(env.From), remote)
	}
	return s.sealer.Open(env)
}
