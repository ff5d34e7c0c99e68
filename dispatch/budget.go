package dispatch

import (
	"sync"
	"time"
)

// budget is the retry budget: over a sliding window (one-second buckets),
// retries may not exceed ratio × requests + perSecond × window seconds.
// Beyond it requests fail fast instead of piling retries on a failing upstream.
//
// A retry is counted only when it is made: Do charges it (retry) just
// before leasing the credential for the further attempt and takes the
// charge back (refund) when no lease comes of it, so a request whose last
// failure leaves nothing to try costs the budget nothing.
type budget struct {
	mu        sync.Mutex
	ratio     float64
	perSecond float64
	buckets   []bucket // ring, by unix second
}

type bucket struct {
	sec               int64
	requests, retries int64
}

func newBudget(ratio, perSecond float64, window time.Duration) *budget {
	return &budget{ratio: ratio, perSecond: perSecond, buckets: make([]bucket, max(1, int(window/time.Second)))}
}

// at returns the bucket of now's second, emptied if it held an older second; mu is held.
func (b *budget) at(now time.Time) *bucket {
	sec := now.Unix()
	bk := &b.buckets[int(sec%int64(len(b.buckets)))]
	if bk.sec != sec {
		*bk = bucket{sec: sec}
	}
	return bk
}

func (b *budget) request(now time.Time) {
	b.mu.Lock()
	b.at(now).requests++
	b.mu.Unlock()
}

// fits reports whether one more retry fits in the window ending at now; mu is held.
func (b *budget) fits(now time.Time) bool {
	sec, n := now.Unix(), int64(len(b.buckets))
	var requests, retries int64
	for _, bk := range b.buckets {
		if bk.sec > sec-n && bk.sec <= sec {
			requests += bk.requests
			retries += bk.retries
		}
	}
	return float64(retries+1) <= b.ratio*float64(requests)+b.perSecond*float64(n)
}

// allows reports whether one more retry fits, without counting it (to
// fail fast instead of waiting out a back-off for a retry that would be
// refused).
func (b *budget) allows(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fits(now)
}

// retry reports whether one more retry fits, and counts it if so. Call it
// right before the retry is made; refund it with the same now if it was
// not made after all.
func (b *budget) retry(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.fits(now) {
		return false
	}
	b.at(now).retries++
	return true
}

// refund takes back a retry that retry counted at now.
func (b *budget) refund(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	sec := now.Unix()
	if bk := &b.buckets[int(sec%int64(len(b.buckets)))]; bk.sec == sec && bk.retries > 0 {
		bk.retries--
	}
}
