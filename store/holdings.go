package store

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	bolt "go.etcd.io/bbolt"
)

// Holdings are the sealed items this node keeps as a replica for other
// users. An item is kept with its recipient, size and times only: never
// who deposited it (the replica does not store that, by design).
var bucketHoldings = []byte("holdings") // recipient -> bucket of item id -> HeldItem

// HeldItem is one item held for a recipient.
type HeldItem struct {
	ID       []byte    `json:"-"`
	Size     int       `json:"-"` // len(Data) as stored, also when Data is left out
	Data     []byte    `json:"data,omitempty"`
	Expires  time.Time `json:"expires"`
	Received time.Time `json:"received"`
}

// Totals is what is held for one recipient.
type Totals struct {
	Items int   `json:"items"`
	Bytes int64 `json:"bytes"`
}

// Hold stores an item for recipient. It reports false, storing nothing,
// when an item with that id is already held.
func (s *Store) Hold(recipient peer.ID, it HeldItem) (bool, error) {
	raw, err := json.Marshal(it)
	if err != nil {
		return false, err
	}
	added := false
	err = s.update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketHoldings)
		if err != nil {
			return err
		}
		b, err := root.CreateBucketIfNotExists([]byte(recipient))
		if err != nil {
			return err
		}
		if b.Get(it.ID) != nil {
			added = false
			return nil
		}
		added = true
		return b.Put(it.ID, raw)
	})
	return added, err
}

// Held lists the items held for recipient, with their data when withData.
// ids, when not nil, restricts the list to those ids.
func (s *Store) Held(recipient peer.ID, ids [][]byte, withData bool) ([]HeldItem, error) {
	var out []HeldItem
	err := s.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketHoldings)
		if root == nil {
			return nil
		}
		b := root.Bucket([]byte(recipient))
		if b == nil {
			return nil
		}
		add := func(k, v []byte) error {
			var it HeldItem
			if err := json.Unmarshal(v, &it); err != nil {
				return fmt.Errorf("store: corrupt held item: %w", err)
			}
			it.ID = append([]byte(nil), k...)
			it.Size = len(it.Data)
			if !withData {
				it.Data = nil
			}
			out = append(out, it)
			return nil
		}
		if ids == nil {
			return b.ForEach(add)
		}
		for _, id := range ids {
			if v := b.Get(id); v != nil {
				if err := add(id, v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return out, err
}

// Release drops held items of recipient and returns how many there were.
func (s *Store) Release(recipient peer.ID, ids [][]byte) (int, error) {
	n := 0
	err := s.update(func(tx *bolt.Tx) error {
		n = 0
		root := tx.Bucket(bucketHoldings)
		if root == nil {
			return nil
		}
		b := root.Bucket([]byte(recipient))
		if b == nil {
			return nil
		}
		for _, id := range ids {
			if b.Get(id) != nil {
				n++
				if err := b.Delete(id); err != nil {
					return err
				}
			}
		}
		if k, _ := b.Cursor().First(); k == nil {
			return root.DeleteBucket([]byte(recipient))
		}
		return nil
	})
	return n, err
}

// HeldTotals is what is held, per recipient.
func (s *Store) HeldTotals() (map[peer.ID]Totals, error) {
	out := map[peer.ID]Totals{}
	err := s.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketHoldings)
		if root == nil {
			return nil
		}
		return root.ForEachBucket(func(r []byte) error {
			var t Totals
			err := root.Bucket(r).ForEach(func(_, v []byte) error {
				var it HeldItem
				if err := json.Unmarshal(v, &it); err != nil {
					return err
				}
				t.Items++
				t.Bytes += int64(len(it.Data))
				return nil
			})
			out[peer.ID(r)] = t
			return err
		})
	})
	return out, err
}

// Expired lists, per recipient, the ids of items whose time is up.
func (s *Store) Expired(now time.Time) (map[peer.ID][][]byte, error) {
	out := map[peer.ID][][]byte{}
	err := s.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketHoldings)
		if root == nil {
			return nil
		}
		return root.ForEachBucket(func(r []byte) error {
			return root.Bucket(r).ForEach(func(k, v []byte) error {
				var it HeldItem
				if json.Unmarshal(v, &it) != nil || now.After(it.Expires) {
					out[peer.ID(r)] = append(out[peer.ID(r)], append([]byte(nil), k...))
				}
				return nil
			})
		})
	})
	return out, err
}
