package inbox

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/internal/pb"
)

// FuzzRequest feeds arbitrary bytes to what a replica decodes from the
// network: the request, then the item it carries.
func FuzzRequest(f *testing.F) {
	item, _ := proto.Marshal(&pb.SealedItem{Ephemeral: make([]byte, 32), Nonce: make([]byte, 24), Ciphertext: make([]byte, 40)})
	req, _ := proto.Marshal(&pb.InboxRequest{Op: &pb.InboxRequest_Deposit{Deposit: &pb.Deposit{Recipient: []byte("x"), Item: item, TtlSeconds: 60}}})
	f.Add(req)
	f.Add(item)
	f.Add([]byte{0x12, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r pb.InboxRequest
		if proto.Unmarshal(data, &r) == nil {
			if d := r.GetDeposit(); d != nil {
				_ = checkItem(d.Item)
				_, _ = peer.IDFromBytes(d.Recipient)
			}
			if h := r.GetHandoff(); h != nil {
				_ = checkItem(h.Item)
			}
		}
		_ = checkItem(data)
	})
}

// FuzzResponse feeds arbitrary bytes to what a sender decodes: a response
// and its receipt.
func FuzzResponse(f *testing.F) {
	f.Add([]byte{0x08, 0x01, 0x1a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r pb.InboxResponse
		if proto.Unmarshal(data, &r) == nil {
			_ = checkReceipt(r.Receipt, "replica", "recipient", make([]byte, IDSize))
		}
	})
}
