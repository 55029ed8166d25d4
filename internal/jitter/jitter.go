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
