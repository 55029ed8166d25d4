package store

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzReadMessage feeds arbitrary bytes to the decoder of history entries:
// a damaged database must give an error, not a panic.
func FuzzReadMessage(f *testing.F) {
	good, _ := json.Marshal(&Message{ID: []byte("0123456789abcdef"), At: time.Unix(1, 0), Body: []byte("hi"), State: Received})
	f.Add(good)
	f.Add([]byte("{"))
	f.Add([]byte(`{"id":"!!"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := readMessage(bob, data, 7)
		if err == nil && (m.Peer != bob || m.Seq != 7) {
			t.Fatalf("decoded %+v", m)
		}
	})
}
