package jitter

import (
	"testing"
	"time"
)

func TestSpreadStaysWithinATenth(t *testing.T) {
	d := 10 * time.Minute
	seen := map[time.Duration]bool{}
	for range 1000 {
		got := Spread(d)
		if got < d-d/10 || got > d+d/10 {
			t.Fatalf("Spread(%v) = %v, outside ±10%%", d, got)
		}
		seen[got] = true
	}
	if len(seen) < 100 {
		t.Fatalf("Spread gave only %d distinct values in 1000 calls", len(seen))
	}
	if Spread(0) != 0 {
		t.Fatal("Spread(0) must be 0")
	}
}
