package store

import (
	"sync"

	bolt "go.etcd.io/bbolt"
)

// group commits concurrent writes together: the first writer to arrive
// becomes the leader and commits every write queued so far in one
// transaction (one fsync), while the others wait for that commit. A lone
// writer commits at once — unlike bbolt's Batch, nobody waits on a timer.
type group struct {
	mu      sync.Mutex
	queue   []*groupOp
	leading bool
}

type groupOp struct {
	fn   func(*bolt.Tx) error
	err  error
	done chan struct{}
}

// maxGroup bounds one commit, so a flood of writers cannot make one
// transaction grow without end.
const maxGroup = 4096

// update runs fn in a transaction shared with concurrent callers and
// returns once that transaction is committed. fn may run more than once if
// another write of its group fails, so it must not have side effects
// outside the transaction.
func (s *Store) update(fn func(*bolt.Tx) error) error {
	op := &groupOp{fn: fn, done: make(chan struct{})}
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, op)
	if g.leading {
		g.mu.Unlock()
		<-op.done
		return op.err
	}
	g.leading = true
	for {
		ops := g.queue
		if len(ops) > maxGroup {
			ops = ops[:maxGroup]
		}
		g.queue = g.queue[len(ops):]
		if len(ops) == 0 {
			g.leading = false
			g.mu.Unlock()
			break
		}
		g.mu.Unlock()
		s.commit(ops)
		g.mu.Lock()
	}
	return op.err
}

// commit runs ops in one transaction; if that fails, each op gets a
// transaction of its own so that one bad write fails alone.
func (s *Store) commit(ops []*groupOp) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, op := range ops {
			if err := op.fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && len(ops) > 1 {
		for _, op := range ops {
			op.err = s.db.Update(op.fn)
		}
	} else {
		for _, op := range ops {
			op.err = err
		}
	}
	for _, op := range ops {
		close(op.done)
	}
}
