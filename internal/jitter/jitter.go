// Package jitter spreads periodic work: nodes that started together (a
// swarm brought up at once, a network back after an outage) would
// otherwise republish, collect and sweep in step, every time.
package jitter

import (
	"math/rand/v2"
	"time"
)

// Spread returns d moved at random by up to a tenth either way.
func Spread(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - d/10 + rand.N(d/5+1)
}

// Phase returns a random point in the second half of d: the wait before
// the first of a periodic series that many nodes may start at once (all
// joining together, all back after a partition). Spread only lets them
// drift apart over many periods; a random phase puts them out of step at
// once, so that their work no longer comes in waves.
func Phase(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}
