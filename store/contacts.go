package store

import (
	"fmt"
	"sort"

	"github.com/libp2p/go-libp2p/core/peer"
	bolt "go.etcd.io/bbolt"
)

// Contact is a peer the user has given a petname.
type Contact struct {
	Name string  `json:"name"`
	ID   peer.ID `json:"id"`
}

// AddContact names p. A peer has one petname: naming it again renames it.
func (s *Store) AddContact(name string, p peer.ID) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		names, ids := tx.Bucket(bucketContacts), tx.Bucket(bucketPetnames)
		if cur := names.Get([]byte(name)); cur != nil && peer.ID(cur) != p {
			return fmt.Errorf("%w: %q is %s", ErrNameTaken, name, peer.ID(cur))
		}
		if old := ids.Get([]byte(p)); old != nil {
			if err := names.Delete(old); err != nil {
				return err
			}
		}
		if err := names.Put([]byte(name), []byte(p)); err != nil {
			return err
		}
		return ids.Put([]byte(p), []byte(name))
	})
}

// RemoveContact forgets a petname. The conversation's history stays.
func (s *Store) RemoveContact(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		names := tx.Bucket(bucketContacts)
		p := names.Get([]byte(name))
		if p == nil {
			return fmt.Errorf("%w: no contact named %q", ErrNotFound, name)
		}
		if err := tx.Bucket(bucketPetnames).Delete(p); err != nil {
			return err
		}
		return names.Delete([]byte(name))
	})
}

// Contact returns the peer named name.
func (s *Store) Contact(name string) (peer.ID, error) {
	var p peer.ID
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketContacts).Get([]byte(name))
		if v == nil {
			return fmt.Errorf("%w: no contact named %q", ErrNotFound, name)
		}
		p = peer.ID(v)
		return nil
	})
	return p, err
}

// Petname returns p's petname, or "" when p is not a contact.
func (s *Store) Petname(p peer.ID) (string, error) {
	var name string
	err := s.db.View(func(tx *bolt.Tx) error {
		name = string(tx.Bucket(bucketPetnames).Get([]byte(p)))
		return nil
	})
	return name, err
}

// Contacts lists all contacts by petname.
func (s *Store) Contacts() ([]Contact, error) {
	var out []Contact
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketContacts).ForEach(func(k, v []byte) error {
			out = append(out, Contact{Name: string(k), ID: peer.ID(v)})
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}
