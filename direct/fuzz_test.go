package direct

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/libp2p/go-msgio/pbio"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/identity"
	"github.com/parley-p2p/parley/internal/pb"
	"github.com/parley-p2p/parley/seal"
)

// FuzzInbound feeds arbitrary bytes to the recipient's decoding path — the
// frame reader, the envelope decoder and the opening of each envelope —
// as they would arrive on a stream. It must never panic and never hold more
// than its bounds.
func FuzzInbound(f *testing.F) {
	a, _ := identity.Generate()
	b, _ := identity.Generate()
	ka, kb := seal.NewKeyring(a), seal.NewKeyring(b)
	env, _ := ka.Seal(&pb.Message{Id: NewID(), From: []byte(a.ID()), To: []byte(b.ID()), Body: []byte("hi")})
	var good bytes.Buffer
	w := pbio.NewDelimitedWriter(&good)
	w.WriteMsg(env)
	w.WriteMsg(env)
	f.Add(good.Bytes())
	f.Add(binary.AppendUvarint(nil, 1<<40))
	f.Add([]byte{0x05, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), 64<<10)
		r := pbio.NewDelimitedReader(br, MaxFrame)
		for range 64 {
			batch, err := readBatch(r, br)
			if len(batch) > MaxBatch {
				t.Fatalf("batch of %d", len(batch))
			}
			for _, env := range batch {
				if proto.Size(env) > MaxFrame {
					t.Fatalf("decoded an envelope of %d bytes", proto.Size(env))
				}
				_, _ = kb.Open(env)
			}
			if err != nil {
				return // EOF, an oversized frame or a bad message ends the stream
			}
		}
	})
}

// FuzzAcks feeds arbitrary bytes to the sender's ack decoding.
func FuzzAcks(f *testing.F) {
	var good bytes.Buffer
	pbio.NewDelimitedWriter(&good).WriteMsg(&pb.Ack{Id: make([]byte, 16), Status: pb.Ack_REJECTED, Reason: "no"})
	f.Add(good.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := pbio.NewDelimitedReader(bytes.NewReader(data), MaxFrame)
		for range 64 {
			var ack pb.Ack
			if err := r.ReadMsg(&ack); err != nil {
				return
			}
		}
	})
}
