// Package inbox is store-and-forward: while a recipient is offline, senders
// leave sealed items with the few replica peers closest to the recipient's
// inbox key in the DHT; the recipient fetches them when it returns, then has
// them deleted. It holds the replica (quotas, expiry, handoff to newcomers),
// the client (deposit, list, fetch, delete) and the recipient's collector.
package inbox

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/parley-p2p/parley/seal"
	"github.com/parley-p2p/parley/store"
)

// Limits bound what one replica holds. Zero fields take the defaults.
type Limits struct {
	MaxItem           int           // bytes of one item; default 64 KiB
	DefaultTTL        time.Duration // default 7 days
	MaxTTL            time.Duration // default 14 days
	RecipientItems    int           // items held for one recipient; default 1000
	RecipientBytes    int64         // bytes held for one recipient; default 16 MiB
	DepositorItems    int           // deposits by one peer per window; default 300
	DepositorBytes    int64         // bytes deposited by one peer per window; default 4 MiB
	DepositorWindow   time.Duration // default 1 min
	Budget            int64         // bytes held in all; default 256 MiB
	maxTrackedSenders int
}

func (l Limits) withDefaults() Limits {
	if l.MaxItem == 0 {
		l.MaxItem = 64 << 10
	}
	if l.DefaultTTL == 0 {
		l.DefaultTTL = 7 * 24 * time.Hour
	}
	if l.MaxTTL == 0 {
		l.MaxTTL = 14 * 24 * time.Hour
	}
	if l.RecipientItems == 0 {
		l.RecipientItems = 1000
	}
	if l.RecipientBytes == 0 {
		l.RecipientBytes = 16 << 20
	}
	if l.DepositorItems == 0 {
		l.DepositorItems = 300
	}
	if l.DepositorBytes == 0 {
		l.DepositorBytes = 4 << 20
	}
	if l.DepositorWindow == 0 {
		l.DepositorWindow = time.Minute
	}
	if l.Budget == 0 {
		l.Budget = 256 << 20
	}
	if l.maxTrackedSenders == 0 {
		l.maxTrackedSenders = 65536
	}
	return l
}

// The refusals a replica gives; each says which bound was hit.
var (
	ErrTooLarge      = errors.New("inbox: item too large")
	ErrTTL           = errors.New("inbox: lifetime over the replica's maximum")
	ErrRecipientFull = errors.New("inbox: too much held for this recipient")
	ErrDepositorRate = errors.New("inbox: too many deposits from you; slow down")
	ErrBudget        = errors.New("inbox: replica is full")
	ErrMalformed     = errors.New("inbox: malformed item")
)

// ledger is the pure bookkeeping of quotas: what is held per recipient and
// in all, and what each depositor sent in its current window. Depositor
// counters live here only, in memory and apart from the items: the replica
// never stores who deposited what.
type ledger struct {
	limits     Limits
	recipients map[peer.ID]store.Totals
	total      int64
	senders    map[peer.ID]*window
}

type window struct {
	start time.Time
	items int
	bytes int64
}

func newLedger(l Limits, held map[peer.ID]store.Totals) *ledger {
	g := &ledger{limits: l.withDefaults(), recipients: map[peer.ID]store.Totals{}, senders: map[peer.ID]*window{}}
	for r, t := range held {
		g.recipients[r] = t
		g.total += t.Bytes
	}
	return g
}

// admit says whether recipient may be given size more bytes; depositor is
// empty for a handoff from another replica, which no rate applies to.
func (g *ledger) admit(depositor, recipient peer.ID, size int, now time.Time) error {
	l := g.limits
	if size > l.MaxItem {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, size, l.MaxItem)
	}
	if g.total+int64(size) > l.Budget {
		return ErrBudget
	}
	t := g.recipients[recipient]
	if t.Items+1 > l.RecipientItems || t.Bytes+int64(size) > l.RecipientBytes {
		return fmt.Errorf("%w (%d items, %d bytes)", ErrRecipientFull, t.Items, t.Bytes)
	}
	if depositor == "" {
		return nil
	}
	w := g.window(depositor, now)
	if w.items+1 > l.DepositorItems || w.bytes+int64(size) > l.DepositorBytes {
		return ErrDepositorRate
	}
	return nil
}

func (g *ledger) window(depositor peer.ID, now time.Time) *window {
	w := g.senders[depositor]
	if w == nil || now.Sub(w.start) >= g.limits.DepositorWindow {
		if w == nil && len(g.senders) >= g.limits.maxTrackedSenders {
			g.prune(now)
		}
		w = &window{start: now}
		g.senders[depositor] = w
	}
	return w
}

// prune forgets windows that are over, keeping the table bounded.
func (g *ledger) prune(now time.Time) {
	for p, w := range g.senders {
		if now.Sub(w.start) >= g.limits.DepositorWindow {
			delete(g.senders, p)
		}
	}
}

// held records an item accepted for recipient.
func (g *ledger) held(depositor, recipient peer.ID, size int, now time.Time) {
	t := g.recipients[recipient]
	t.Items++
	t.Bytes += int64(size)
	g.recipients[recipient] = t
	g.total += int64(size)
	if depositor != "" {
		w := g.window(depositor, now)
		w.items++
		w.bytes += int64(size)
	}
}

// released records that items of recipient totalling size bytes are gone.
func (g *ledger) released(recipient peer.ID, items int, size int64) {
	t := g.recipients[recipient]
	t.Items -= items
	t.Bytes -= size
	if t.Items <= 0 {
		delete(g.recipients, recipient)
	} else {
		g.recipients[recipient] = t
	}
	g.total -= size
}

// checkItem rejects what is not a well-formed sealed item, without opening
// it (the replica cannot).
func checkItem(data []byte) error {
	if len(data) > seal.MaxItem {
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, len(data))
	}
	return validItem(data)
}
