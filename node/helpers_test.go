package node

import (
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/identity"
	sealpkg "github.com/parley-p2p/parley/seal"
)

func cryptoMarshal(id *identity.Identity) ([]byte, error) {
	return crypto.MarshalPrivateKey(id.PrivKey())
}

func protoMarshal(m proto.Message) ([]byte, error) { return proto.Marshal(m) }

// closerThanAll reports whether p is closer to key than every peer of others.
func closerThanAll(p peer.ID, others []peer.ID, key string) bool {
	for _, o := range others {
		if !kb.Closer(p, o, key) {
			return false
		}
	}
	return true
}

func keyring(n *Node) sealpkg.Sealer { return sealpkg.NewKeyring(n.id) }

func newID() []byte { return sealpkg.NewID() }
