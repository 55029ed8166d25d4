package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	bolt "go.etcd.io/bbolt"
)

var (
	bucketSettings = []byte("settings") // name -> JSON value
	bucketMarks    = []byte("marks")    // list name -> bucket of peer ID -> empty
	bucketRequests = []byte("requests") // peer ID -> JSON Request
)

// Setting reads the JSON value stored under name into v. It reports false,
// leaving v alone, when nothing is stored.
func (s *Store) Setting(name string, v any) (bool, error) {
	var raw []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketSettings); b != nil {
			raw = append(raw, b.Get([]byte(name))...)
		}
		return nil
	})
	if err != nil || raw == nil {
		return false, err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("store: corrupt setting %q: %w", name, err)
	}
	return true, nil
}

// PutSetting stores v as JSON under name.
func (s *Store) PutSetting(name string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketSettings)
		if err != nil {
			return err
		}
		return b.Put([]byte(name), raw)
	})
}

// Mark puts p on the named list (allow, deny, block, …) or takes it off.
func (s *Store) Mark(list string, p peer.ID, on bool) error {
	return s.update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketMarks)
		if err != nil {
			return err
		}
		b, err := root.CreateBucketIfNotExists([]byte(list))
		if err != nil {
			return err
		}
		if on {
			return b.Put([]byte(p), nil)
		}
		return b.Delete([]byte(p))
	})
}

// Marked returns the peers on the named list.
func (s *Store) Marked(list string) (map[peer.ID]bool, error) {
	out := map[peer.ID]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketMarks)
		if root == nil {
			return nil
		}
		b := root.Bucket([]byte(list))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			out[peer.ID(k)] = true
			return nil
		})
	})
	return out, err
}

// Request is a stranger who wrote to the user: a contact request until
// accepted, denied or blocked.
type Request struct {
	Peer     peer.ID   `json:"-"`
	First    time.Time `json:"first"`
	Last     time.Time `json:"last"`
	Messages int       `json:"messages"`
}

// NoteRequest records that a stranger wrote, the first time only: a
// stranger's later messages cost no write (their count and time are in the
// history).
func (s *Store) NoteRequest(p peer.ID, at time.Time) error {
	known := false
	_ = s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketRequests); b != nil {
			known = b.Get([]byte(p)) != nil
		}
		return nil
	})
	if known {
		return nil
	}
	return s.update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketRequests)
		if err != nil {
			return err
		}
		r := Request{First: at}
		if raw := b.Get([]byte(p)); raw != nil {
			_ = json.Unmarshal(raw, &r)
		}
		r.Last = at
		r.Messages++
		raw, err := json.Marshal(r)
		if err != nil {
			return err
		}
		return b.Put([]byte(p), raw)
	})
}

// DropRequest forgets a request once it is answered.
func (s *Store) DropRequest(p peer.ID) error {
	return s.update(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketRequests); b != nil {
			return b.Delete([]byte(p))
		}
		return nil
	})
}

// Requests lists open contact requests, oldest first.
func (s *Store) Requests() ([]Request, error) {
	var out []Request
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRequests)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var r Request
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("store: corrupt request: %w", err)
			}
			r.Peer = peer.ID(k)
			out = append(out, r)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].First.Before(out[j].First) })
	return out, err
}
