package identity

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/crypto/curve25519"
)

func TestCreateLoad(t *testing.T) {
	home := t.TempDir()
	id, err := Create(home)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(home, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %o, want 600", st.Mode().Perm())
	}
	got, err := Load(home)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID() != id.ID() {
		t.Fatalf("loaded %s, created %s", got.ID(), id.ID())
	}
	if _, err := Create(home); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create: %v, want ErrExists", err)
	}
	again, _ := Load(home)
	if again.ID() != id.ID() {
		t.Fatal("second Create changed the key")
	}
	if entries, _ := os.ReadDir(home); len(entries) != 1 {
		t.Fatalf("home holds %d files, want only the key", len(entries))
	}
}

func TestLoadRefusesReadableKey(t *testing.T) {
	home := t.TempDir()
	if _, err := Create(home); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(home, KeyFile)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(home)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Load of a 0644 key: %v, want an error that says to chmod 600", err)
	}
}

func TestLoadErrors(t *testing.T) {
	home := t.TempDir()
	if _, err := Load(home); !errors.Is(err, ErrNoIdentity) || !strings.Contains(err.Error(), "parley init") {
		t.Fatalf("Load of empty home: %v", err)
	}
	if err := os.WriteFile(filepath.Join(home, KeyFile), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(home); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Load of corrupt key: %v", err)
	}
}

func TestX25519Agreement(t *testing.T) {
	a, _ := Generate()
	b, _ := Generate()
	ap, bp := a.X25519Private(), b.X25519Private()
	apub, err := X25519Public(a.ID())
	if err != nil {
		t.Fatal(err)
	}
	bpub, err := X25519Public(b.ID())
	if err != nil {
		t.Fatal(err)
	}
	// The derived public key must be the base-point multiple of the derived
	// private key, or the two sides would not agree.
	mine, _ := curve25519.X25519(ap[:], curve25519.Basepoint)
	if string(mine) != string(apub[:]) {
		t.Fatal("X25519Public(ID) disagrees with X25519Private")
	}
	s1, err := curve25519.X25519(ap[:], bpub[:])
	if err != nil {
		t.Fatal(err)
	}
	s2, err := curve25519.X25519(bp[:], apub[:])
	if err != nil {
		t.Fatal(err)
	}
	if string(s1) != string(s2) {
		t.Fatal("shared secrets differ")
	}
}

func TestLowOrderRejected(t *testing.T) {
	// The Edwards identity (0, 1) and the point of order 2 (0, -1).
	identityPoint := make([]byte, 32)
	identityPoint[0] = 1
	order2 := []byte{0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}
	for _, raw := range [][]byte{identityPoint, order2} {
		pub, err := crypto.UnmarshalEd25519PublicKey(raw)
		if err != nil {
			t.Fatal(err)
		}
		id, err := peer.IDFromPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := X25519Public(id); !errors.Is(err, ErrLowOrder) {
			t.Errorf("low-order key %x: %v, want ErrLowOrder", raw, err)
		}
	}
}

func TestNonEd25519Rejected(t *testing.T) {
	// A peer ID that is a plain SHA-256 hash embeds no key at all.
	id, err := peer.Decode("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := X25519Public(id); !errors.Is(err, ErrNotEd25519) {
		t.Fatalf("hashed peer ID: %v, want ErrNotEd25519", err)
	}
}

// FuzzParse feeds arbitrary key files to Parse: never a panic, and a key
// it accepts is one whose X25519 half is usable.
func FuzzParse(f *testing.F) {
	id, _ := Generate()
	raw, _ := crypto.MarshalPrivateKey(id.PrivKey())
	f.Add(raw)
	f.Add([]byte{})
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		id, err := Parse(data)
		if err != nil {
			return
		}
		_ = id.X25519Private()
		if _, err := X25519Public(id.ID()); err != nil && !errors.Is(err, ErrLowOrder) {
			t.Fatalf("parsed key's own ID: %v", err)
		}
	})
}

// FuzzX25519Public feeds arbitrary peer IDs to the key derivation.
func FuzzX25519Public(f *testing.F) {
	id, _ := Generate()
	f.Add([]byte(id.ID()))
	f.Add([]byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = X25519Public(peer.ID(data))
	})
}
