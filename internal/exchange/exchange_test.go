package exchange

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/libp2p/go-msgio/pbio"
	"google.golang.org/protobuf/proto"

	"github.com/parley-p2p/parley/internal/pb"
)

func frame(note string) *pb.PresenceFrame {
	return &pb.PresenceFrame{Frame: &pb.PresenceFrame_Subscribe{Subscribe: &pb.Subscribe{TtlSeconds: uint32(len(note))}}}
}

func TestReadMsgReadsOneMessageAndNoMore(t *testing.T) {
	var stream bytes.Buffer
	w := pbio.NewDelimitedWriter(&stream)
	for _, n := range []string{"a", "bb", ""} {
		if err := w.WriteMsg(frame(n)); err != nil {
			t.Fatal(err)
		}
	}
	// Back to back on one stream: each read must leave the next message
	// where it is (ReadMsg buffers nothing).
	for _, n := range []string{"a", "bb", ""} {
		var got pb.PresenceFrame
		if err := ReadMsg(&stream, 1024, &got); err != nil {
			t.Fatalf("ReadMsg: %v", err)
		}
		if !proto.Equal(&got, frame(n)) {
			t.Fatalf("read %v, want %v", &got, frame(n))
		}
	}
	var got pb.PresenceFrame
	if err := ReadMsg(&stream, 1024, &got); err != io.EOF {
		t.Fatalf("ReadMsg at the end of the stream: %v, want io.EOF", err)
	}
}

func TestReadMsgRejectsBadInput(t *testing.T) {
	whole, err := proto.Marshal(frame("some text"))
	if err != nil {
		t.Fatal(err)
	}
	prefixed := binary.AppendUvarint(nil, uint64(len(whole)))
	prefixed = append(prefixed, whole...)
	cases := []struct {
		name  string
		input []byte
		max   int
		want  error // nil: any error
	}{
		{"over the bound", prefixed, len(whole) - 1, nil},
		{"announces 1 GB", binary.AppendUvarint(nil, 1<<30), 4 << 20, nil},
		{"length cut short", []byte{0x80}, 1024, io.ErrUnexpectedEOF},
		{"body cut short", prefixed[:len(prefixed)-1], 1024, io.ErrUnexpectedEOF},
		{"length overflows", bytes.Repeat([]byte{0xff}, 11), 1024, nil},
		{"not a protobuf", []byte{2, 0xff, 0xff}, 1024, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got pb.PresenceFrame
			err := ReadMsg(bytes.NewReader(tc.input), tc.max, &got)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("ReadMsg: %v, want an error (%v if named)", err, tc.want)
			}
		})
	}
}

// TestReadMsgLarge: a message past the first allocation (preallocate) is
// read whole as it grows, and one cut short there is an error.
func TestReadMsgLarge(t *testing.T) {
	record := bytes.Repeat([]byte("parley "), 3*preallocate/7+100) // ~3 × preallocate
	big := &pb.PresenceFrame{Frame: &pb.PresenceFrame_Notify{Notify: &pb.Notify{Record: record}}}
	var stream bytes.Buffer
	if err := pbio.NewDelimitedWriter(&stream).WriteMsg(big); err != nil {
		t.Fatal(err)
	}
	whole := stream.Bytes()
	var got pb.PresenceFrame
	if err := ReadMsg(bytes.NewReader(whole), 1<<20, &got); err != nil {
		t.Fatalf("ReadMsg: %v", err)
	}
	if !proto.Equal(&got, big) {
		t.Fatal("the large message read back differs")
	}
	for _, cut := range []int{preallocate + 3, 2*preallocate + 5, len(whole) - 1} {
		if err := ReadMsg(bytes.NewReader(whole[:cut]), 1<<20, &got); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut at %d of %d bytes: %v, want io.ErrUnexpectedEOF", cut, len(whole), err)
		}
	}
}
