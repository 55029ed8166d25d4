// Package exchange is the one-request-per-stream pattern that several
// Parley protocols share: open a stream, write one length-prefixed protobuf,
// read one back (bounded), and reset the stream on any error.
package exchange

import (
	"context"

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
	if err := pbio.NewDelimitedReader(str, maxResp).ReadMsg(resp); err != nil {
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
