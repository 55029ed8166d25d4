// Package store is a node's durable memory, one bbolt file per home:
// contacts and their petnames, the history of every conversation, the outbox
// of messages not yet delivered, and the index of message ids seen, which
// deduplicates deliveries. Every write is committed (fsync) before the call
// returns, so callers may acknowledge what they stored (unless the store
// was opened with NoSync, for nodes whose machine never fails under them).
package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// State is where a message stands in its delivery.
type State string

// The delivery states. An outgoing message moves from Queued to Stored (left
// with replicas while the recipient is away) or straight to Delivered, then
// to Read; or it Failed. Incoming ones are Received, then Read.
const (
	Queued    State = "queued"
	Stored    State = "stored"
	Delivered State = "delivered"
	Read      State = "read"
	Failed    State = "failed"
	Received  State = "received"
)

// Terminal reports whether a state ends an outgoing message's delivery:
// the sender has nothing more to do for it.
func (s State) Terminal() bool { return s == Delivered || s == Read || s == Failed }

// rank orders states so that a late report never moves a message back.
func (s State) rank() int {
	switch s {
	case Queued:
		return 0
	case Stored:
		return 1
	case Delivered:
		return 2
	case Read:
		return 3
	case Failed:
		return 4
	}
	return 0
}

// Message is one entry in a conversation's history.
type Message struct {
	ID       []byte    `json:"id"`
	Peer     peer.ID   `json:"-"` // the other side: the conversation's bucket name
	Outgoing bool      `json:"out"`
	SentAt   time.Time `json:"sent"` // the sender's clock
	At       time.Time `json:"at"`   // when this node stored it
	Kind     int32     `json:"kind"`
	Body     []byte    `json:"body"`
	State    State     `json:"state"`
	Reason   string    `json:"reason,omitempty"`
	Replicas int       `json:"replicas,omitempty"` // for Stored: replicas holding it
	Of       int       `json:"of,omitempty"`       // for Stored: replicas asked

	Seq    uint64 `json:"-"`                // position in the conversation
	Outbox uint64 `json:"outbox,omitempty"` // position in the outbox while undelivered
}

var (
	// ErrLocked means another process has the database open.
	ErrLocked = errors.New("store: database is in use by another process")
	// ErrNotFound means no such message or contact.
	ErrNotFound = errors.New("store: not found")
	// ErrNameTaken means a petname already names another peer.
	ErrNameTaken = errors.New("store: petname already names another contact")
)

var (
	bucketContacts = []byte("contacts") // petname -> peer ID
	bucketPetnames = []byte("petnames") // peer ID -> petname
	bucketHistory  = []byte("history")  // peer ID -> bucket of seq -> Message
	bucketIndex    = []byte("index")    // direction|peer|id -> seq
	bucketOutbox   = []byte("outbox")   // seq -> history key of an undelivered message
)

// Store is an open database. It is safe for concurrent use.
type Store struct {
	db    *bolt.DB
	group group
}

// Options tune how a database is opened; the zero value is what a user's
// node wants.
type Options struct {
	// NoSync commits without flushing to disk: a write still reaches the
	// file before the call returns, so it survives the process stopping or
	// crashing, but not the machine failing. For nodes whose machine is not
	// part of what they test: in a simulation a node's crash is its process
	// stopping while the page cache lives on, so a flush there changes
	// nothing the run can observe, and its disk wait, during which virtual
	// time cannot move, was a tenth of a simulation's wall time.
	NoSync bool
}

// Open opens or creates the database at path. It fails fast with ErrLocked
// when another process holds it, which is what keeps two daemons off one
// home.
func Open(path string, o Options) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 250 * time.Millisecond, NoFreelistSync: true, FreelistType: bolt.FreelistMapType, NoSync: o.NoSync})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	}
	if err != nil {
		if _, statErr := os.Stat(path); statErr == nil {
			return nil, fmt.Errorf("store: database %s is unreadable or corrupt (%v); move it away to start with an empty history", path, err)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketContacts, bucketPetnames, bucketHistory, bucketIndex, bucketOutbox} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: database %s is corrupt (%v); move it away to start with an empty history", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func indexKey(outgoing bool, p peer.ID, id []byte) []byte {
	k := make([]byte, 0, 2+len(p)+len(id))
	if outgoing {
		k = append(k, 'o')
	} else {
		k = append(k, 'i')
	}
	k = append(k, byte(len(p)))
	k = append(k, p...)
	return append(k, id...)
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// put appends m to its conversation and indexes it. It reports false when
// the message is already there.
func put(tx *bolt.Tx, m *Message) (bool, error) {
	idx := tx.Bucket(bucketIndex)
	ik := indexKey(m.Outgoing, m.Peer, m.ID)
	if idx.Get(ik) != nil {
		return false, nil
	}
	conv, err := tx.Bucket(bucketHistory).CreateBucketIfNotExists([]byte(m.Peer))
	if err != nil {
		return false, err
	}
	if m.Seq, err = conv.NextSequence(); err != nil {
		return false, err
	}
	if m.Outgoing && !m.State.Terminal() {
		ob := tx.Bucket(bucketOutbox)
		if m.Outbox, err = ob.NextSequence(); err != nil {
			return false, err
		}
		if err := ob.Put(u64(m.Outbox), ik); err != nil {
			return false, err
		}
	}
	if err := writeMessage(conv, m); err != nil {
		return false, err
	}
	return true, idx.Put(ik, u64(m.Seq))
}

func writeMessage(conv *bolt.Bucket, m *Message) error {
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return conv.Put(u64(m.Seq), v)
}

func readMessage(p peer.ID, v []byte, seq uint64) (*Message, error) {
	m := new(Message)
	if err := json.Unmarshal(v, m); err != nil {
		return nil, fmt.Errorf("store: corrupt history entry %d with %s: %w", seq, p, err)
	}
	m.Peer, m.Seq = p, seq
	return m, nil
}

// Queue stores a new outgoing message and puts it in the outbox.
func (s *Store) Queue(m *Message) error {
	m.Outgoing = true
	return s.update(func(tx *bolt.Tx) error {
		added, err := put(tx, m)
		if err == nil && !added {
			err = fmt.Errorf("store: message %x to %s already queued", m.ID, m.Peer)
		}
		return err
	})
}

// Receive stores incoming messages in one commit and reports, per message,
// whether it was new. A message already seen (same sender and id) is not
// stored again. One commit (and fsync) covers all of msgs, and is shared
// with concurrent writers.
func (s *Store) Receive(msgs []*Message) ([]bool, error) {
	added := make([]bool, len(msgs))
	err := s.update(func(tx *bolt.Tx) error {
		for i, m := range msgs {
			m.Outgoing = false
			ok, err := put(tx, m)
			if err != nil {
				return err
			}
			added[i] = ok
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: receive: %w", err)
	}
	return added, nil
}

// Update is a new state for one outgoing message.
type Update struct {
	Peer         peer.ID
	ID           []byte
	State        State
	Reason       string
	Replicas, Of int // for Stored
}

// SetStates records new states for outgoing messages in one commit, and
// takes each message whose state is terminal out of the outbox.
func (s *Store) SetStates(updates []Update) error {
	return s.update(func(tx *bolt.Tx) error {
		for _, u := range updates {
			if err := setState(tx, u); err != nil {
				return err
			}
		}
		return nil
	})
}

func setState(tx *bolt.Tx, u Update) error {
	seqb := tx.Bucket(bucketIndex).Get(indexKey(true, u.Peer, u.ID))
	conv := tx.Bucket(bucketHistory).Bucket([]byte(u.Peer))
	if seqb == nil || conv == nil {
		return fmt.Errorf("%w: message %x to %s", ErrNotFound, u.ID, u.Peer)
	}
	m, err := readMessage(u.Peer, conv.Get(seqb), binary.BigEndian.Uint64(seqb))
	if err != nil {
		return err
	}
	// Reports can arrive late and out of order (a delivery receipt after the
	// read receipt, a deposit result after a direct ack): never move back.
	if u.State.rank() < m.State.rank() {
		return nil
	}
	m.State, m.Reason, m.Replicas, m.Of = u.State, u.Reason, u.Replicas, u.Of
	if u.State.Terminal() && m.Outbox != 0 {
		if err := tx.Bucket(bucketOutbox).Delete(u64(m.Outbox)); err != nil {
			return err
		}
		m.Outbox = 0
	}
	return writeMessage(conv, m)
}

// Pending returns the outbox: outgoing messages not yet delivered, in the
// order they were queued.
func (s *Store) Pending() ([]*Message, error) { return s.pending(nil) }

// PendingTo is Pending for the messages to p only. It decodes only those
// (the outbox names each message's peer in its key), so that a wake for a
// peer that connects — which happens all the time — does not decode the
// whole outbox.
func (s *Store) PendingTo(p peer.ID) ([]*Message, error) {
	if p == "" {
		return nil, nil
	}
	return s.pending([]byte(p))
}

// pending reads the outbox, only the messages to peer if it is not nil.
func (s *Store) pending(peer []byte) ([]*Message, error) {
	var out []*Message
	err := s.db.View(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bucketIndex)
		return tx.Bucket(bucketOutbox).ForEach(func(_, ik []byte) error {
			if p, ok := keyPeer(ik); peer != nil && ok && !bytes.Equal(p, peer) {
				return nil // someone else's (a corrupt key goes on, for lookup to report)
			}
			m, err := lookup(tx, idx, ik)
			if err != nil {
				return err
			}
			out = append(out, m)
			return nil
		})
	})
	return out, err
}

// keyPeer is the peer an index key (direction, peer length, peer, id)
// names; false if the key is too short to name one.
func keyPeer(ik []byte) ([]byte, bool) {
	if len(ik) < 2 || len(ik) < 2+int(ik[1]) {
		return nil, false
	}
	return ik[2 : 2+int(ik[1])], true
}

func lookup(tx *bolt.Tx, idx *bolt.Bucket, ik []byte) (*Message, error) {
	p, ok := keyPeer(ik)
	if !ok {
		return nil, fmt.Errorf("store: corrupt index key %x", ik)
	}
	seqb := idx.Get(ik)
	conv := tx.Bucket(bucketHistory).Bucket(p)
	if seqb == nil || conv == nil {
		return nil, fmt.Errorf("store: index names a missing message %x", ik)
	}
	return readMessage(peer.ID(p), conv.Get(seqb), binary.BigEndian.Uint64(seqb))
}

// Get returns one message by direction, peer and id.
func (s *Store) Get(p peer.ID, id []byte, outgoing bool) (*Message, error) {
	var m *Message
	err := s.db.View(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bucketIndex)
		ik := indexKey(outgoing, p, id)
		if idx.Get(ik) == nil {
			return fmt.Errorf("%w: message %x with %s", ErrNotFound, id, p)
		}
		var err error
		m, err = lookup(tx, idx, ik)
		return err
	})
	return m, err
}

// History returns the last limit messages of the conversation with p,
// oldest first (all of them when limit <= 0).
func (s *Store) History(p peer.ID, limit int) ([]*Message, error) {
	var out []*Message
	err := s.db.View(func(tx *bolt.Tx) error {
		conv := tx.Bucket(bucketHistory).Bucket([]byte(p))
		if conv == nil {
			return nil
		}
		c := conv.Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			m, err := readMessage(p, v, binary.BigEndian.Uint64(k))
			if err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}

// Read is showing the conversation with p: it returns all of it, oldest
// first, with every incoming message of the given kind marked read, and the
// ids of those that were not read before, in order. Marking and reading are
// one transaction, so a message that arrives meanwhile is either shown and
// read or neither; it is never shown yet left unread (which would withhold
// its read receipt until the conversation is shown again).
func (s *Store) Read(p peer.ID, kind int32) (ms []*Message, read [][]byte, err error) {
	unread := func(m *Message) bool { return !m.Outgoing && m.Kind == kind && m.State == Received }
	// Mostly there is nothing new to mark: a read-only look then does, and
	// spares a write transaction (and its sync to disk) per showing.
	some := false
	err = s.db.View(func(tx *bolt.Tx) error {
		return eachMessage(tx, p, func(_ *bolt.Bucket, m *Message) error {
			some = some || unread(m)
			ms = append(ms, m)
			return nil
		})
	})
	if err != nil || !some {
		return ms, nil, err
	}
	err = s.update(func(tx *bolt.Tx) error {
		ms, read = ms[:0], read[:0] // update may run the function again
		return eachMessage(tx, p, func(conv *bolt.Bucket, m *Message) error {
			if unread(m) {
				m.State = Read
				if err := writeMessage(conv, m); err != nil {
					return err
				}
				read = append(read, m.ID)
			}
			ms = append(ms, m)
			return nil
		})
	})
	return ms, read, err
}

// eachMessage calls fn with each message of the conversation with p,
// oldest first, and the conversation's bucket.
func eachMessage(tx *bolt.Tx, p peer.ID, fn func(conv *bolt.Bucket, m *Message) error) error {
	conv := tx.Bucket(bucketHistory).Bucket([]byte(p))
	if conv == nil {
		return nil
	}
	c := conv.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		m, err := readMessage(p, v, binary.BigEndian.Uint64(k))
		if err != nil {
			return err
		}
		if err := fn(conv, m); err != nil {
			return err
		}
	}
	return nil
}
