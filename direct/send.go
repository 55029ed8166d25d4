package direct

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio/pbio"

	"github.com/parley-p2p/parley/internal/pb"
)

// session is the sender's long-lived stream to one peer. Its mutex keeps
// one batch in flight at a time, which also keeps a conversation in order.
type session struct {
	mu  sync.Mutex
	str network.Stream
	bw  *bufio.Writer
	w   pbio.Writer
	r   pbio.Reader
}

// Send seals msgs, writes them to the peer and waits for their acks. An
// error means the attempt failed as a whole and nothing can be assumed
// about any message (the caller retries; the recipient deduplicates).
func (s *Service) Send(ctx context.Context, to peer.ID, msgs []*pb.Message) ([]Result, error) {
	if len(msgs) > MaxBatch {
		return nil, fmt.Errorf("direct: batch of %d is over %d", len(msgs), MaxBatch)
	}
	envs := make([]*pb.Envelope, len(msgs))
	for i, m := range msgs {
		env, err := s.sealer.Seal(m)
		if err != nil {
			return nil, err
		}
		envs[i] = env
	}
	// A kept stream may have died since its last use (the peer restarted,
	// or reset it when idle): then try once more on a fresh one. Resending
	// is safe because the recipient deduplicates.
	for attempt := 0; ; attempt++ {
		ss, fresh, err := s.session(ctx, to)
		if err != nil {
			return nil, err
		}
		res, err := ss.send(ctx, envs, s.now())
		if err == nil {
			return res, nil
		}
		s.drop(to, ss)
		if fresh || attempt > 0 || ctx.Err() != nil {
			return nil, fmt.Errorf("direct: send to %s: %w", to, err)
		}
	}
}

func (ss *session) send(ctx context.Context, envs []*pb.Envelope, now time.Time) ([]Result, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	res, err := ss.exchange(ctx, envs, now)
	if err != nil {
		ss.str.Reset()
	}
	return res, err
}

func (ss *session) exchange(ctx context.Context, envs []*pb.Envelope, now time.Time) ([]Result, error) {
	deadline := now.Add(IOTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = ss.str.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { ss.str.Reset() })
	defer stop()
	for _, env := range envs {
		if err := ss.w.WriteMsg(env); err != nil {
			return nil, err
		}
	}
	if err := ss.bw.Flush(); err != nil {
		return nil, err
	}
	res := make([]Result, len(envs))
	for i, env := range envs {
		var ack pb.Ack
		if err := ss.r.ReadMsg(&ack); err != nil {
			return nil, frameError(err)
		}
		if !bytes.Equal(ack.Id, env.Id) {
			return nil, fmt.Errorf("%w: ack for %x, expected %x", ErrProtocol, ack.Id, env.Id)
		}
		switch ack.Status {
		case pb.Ack_OK:
			res[i] = Result{OK: true}
		case pb.Ack_REJECTED:
			res[i] = Result{Reason: "rejected by recipient: " + ack.Reason}
		default:
			return nil, fmt.Errorf("%w: ack status %v", ErrProtocol, ack.Status)
		}
	}
	return res, nil
}

// session returns the open stream to p, opening one if needed; fresh says
// it was just opened.
func (s *Service) session(ctx context.Context, p peer.ID) (ss *session, fresh bool, err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, false, ErrClosed
	}
	if ss, ok := s.sessions[p]; ok {
		s.mu.Unlock()
		return ss, false, nil
	}
	s.mu.Unlock()
	str, err := s.host.NewStream(ctx, p, ID)
	if err != nil {
		return nil, false, fmt.Errorf("direct: cannot reach %s: %w", p, err)
	}
	// Small: a session lives as long as the peer is a contact in use, and
	// a write larger than the buffer goes straight through anyway.
	bw := bufio.NewWriterSize(str, 4<<10)
	ss = &session{str: str, bw: bw, w: pbio.NewDelimitedWriter(bw), r: pbio.NewDelimitedReader(str, MaxFrame)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		str.Reset()
		return nil, false, ErrClosed
	}
	if cur, ok := s.sessions[p]; ok { // lost a race with another sender
		str.Reset()
		return cur, false, nil
	}
	s.sessions[p] = ss
	return ss, true, nil
}

func (s *Service) drop(p peer.ID, ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[p] == ss {
		delete(s.sessions, p)
	}
}
