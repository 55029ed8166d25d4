// Package exchange is the one-request-per-stream pattern that several
// Parley protocols share: open a stream, write one length-prefixed protobuf,
// read one back (bounded), and reset the stream on any error.
package exchange

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio/pbio"
	"google.golang.org/protobuf/proto"
)

// Request writes req to p on a new stream of proto and reads the answer
// into resp, refusing an answer over maxResp bytes. ctx's deadline, if any,
// bounds the whole exchange.
func Request(ctx context.Context, h host.Host, p peer.ID, proto protocol.ID, req, resp proto.Message, maxResp int) error {
	str, err := h.NewStream(ctx, p, proto)
	if err != nil {
		return err
	}
	defer str.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = str.SetDeadline(d)
	}
	if err := pbio.NewDelimitedWriter(str).WriteMsg(req); err != nil {
		str.Reset()
		return err
	}
	if err := ReadMsg(str, maxResp, resp); err != nil {
		str.Reset()
		return err
	}
	return nil
}

// Send writes msg to p on a new stream of proto and expects no answer.
func Send(ctx context.Context, h host.Host, p peer.ID, proto protocol.ID, msg proto.Message) error {
	str, err := h.NewStream(ctx, p, proto)
	if err != nil {
		return err
	}
	defer str.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = str.SetDeadline(d)
	}
	if err := pbio.NewDelimitedWriter(str).WriteMsg(msg); err != nil {
		str.Reset()
		return err
	}
	return nil
}

// ReadMsg reads one length-prefixed protobuf from r into m, refusing one
// over max bytes. It reads the length a byte at a time and then exactly the
// message, so it needs no buffer of its own: pbio's reader takes a 4 KB
// one per stream, for the one message most streams carry.
func ReadMsg(r io.Reader, max int, m proto.Message) error {
	n, err := binary.ReadUvarint(&byteReader{r: r})
	if err != nil {
		return err // io.EOF only when the stream ended before a message
	}
	if n > uint64(max) {
		return fmt.Errorf("exchange: message of %d bytes, over the %d allowed", n, max)
	}
	// Memory grows with the bytes that came, not with the length a peer
	// announced: up to preallocate at once, then doubling. (A message
	// within preallocate, nearly all of them, costs one allocation of its
	// own size.)
	buf := make([]byte, min(n, preallocate))
	for read := 0; ; {
		if _, err := io.ReadFull(r, buf[read:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if uint64(len(buf)) == n {
			break
		}
		read = len(buf)
		buf = append(buf, make([]byte, min(n-uint64(read), uint64(read)))...)
	}
	return proto.Unmarshal(buf, m)
}

// preallocate is how much of a message's announced length ReadMsg sets
// aside before any of it arrived.
const preallocate = 16 << 10

// byteReader reads from r a byte at a time.
type byteReader struct {
	r   io.Reader
	one [1]byte
}

func (b *byteReader) ReadByte() (byte, error) {
	_, err := io.ReadFull(b.r, b.one[:])
	return b.one[0], err
}
