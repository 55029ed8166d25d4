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

func TestPhaseFallsInTheSecondHalf(t *testing.T) {
	d := 10 * time.Minute
	var early, late bool
	for range 1000 {
		got := Phase(d)
		if got < d/2 || got > d {
			t.Fatalf("Phase(%v) = %v, outside [%v, %v]", d, got, d/2, d)
		}
		early = early || got < d/2+d/10
		late = late || got > d-d/10
	}
	if !early || !late {
		t.Fatal("Phase does not cover the second half of the interval")
	}
	if Phase(0) != 0 {
		t.Fatal("Phase(0) must be 0")
	}
}
