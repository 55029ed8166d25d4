package sim

import (
	"time"

	"golang.org/x/sys/unix"
)

// wallNow reads the machine's monotonic clock. Inside a synctest bubble
// time.Now is the simulated clock; the cost of a run is wall time.
func wallNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
