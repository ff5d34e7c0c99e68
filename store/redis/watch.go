package redis

import (
	"context"
	"errors"
	"net"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Timing of the watchers.
const (
	// defaultWatchPing is how long a watcher waits for a message before it
	// pings the server; no answer within as long again means the
	// connection is dead and the watcher reconnects (Store.watchPing).
	defaultWatchPing = 15 * time.Second
	// watchBackoffMin and watchBackoffMax bound the pause between two
	// attempts to subscribe.
	watchBackoffMin = 50 * time.Millisecond
	watchBackoffMax = 2 * time.Second
)

// Watch implements store.Watcher. It subscribes to the events channel
// (<prefix>events), on which every configuration change and every
// credential-state change is published in the script that commits it, and
// sends on the returned channel:
//   - once each time the subscription is in place: after the first
//     subscription and after every reconnection, since changes made while
//     not subscribed were missed;
//   - once per message received.
//
// The channel has a buffer of one and sends never block, so notices that
// arrive while one is pending merge into it. A lost connection is retried
// with a back-off of up to watchBackoffMax; each failed attempt counts in
// Errors. The channel is closed when ctx ends or the Store is closed.
func (s *Store) Watch(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		close(out)
		return out
	}
	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.life, cancel)
	s.watchers.Go(func() {
		defer close(out)
		defer stop()
		defer cancel()
		s.watch(wctx, out)
	})
	return out
}

// notify sends a notice unless one is pending.
func notify(out chan<- struct{}) {
	select {
	case out <- struct{}{}:
	default:
	}
}

// watch subscribes again after every connection loss until ctx ends.
func (s *Store) watch(ctx context.Context, out chan<- struct{}) {
	backoff := watchBackoffMin
	for {
		subscribed := s.watchOnce(ctx, out)
		if ctx.Err() != nil {
			return
		}
		s.errs.Add(1)
		if subscribed {
			backoff = watchBackoffMin
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, watchBackoffMax)
	}
}

// watchOnce holds one subscription until its connection fails or ctx ends,
// and reports whether the subscription was in place at some point.
func (s *Store) watchOnce(ctx context.Context, out chan<- struct{}) (subscribed bool) {
	ps := s.client.Subscribe(ctx, s.k.events)
	// Receive blocks in a read that only a deadline or a closed connection
	// ends: closing the PubSub is how a cancelled ctx interrupts it.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer func() {
		if stop() {
			_ = ps.Close()
		}
	}()
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, s.watchPing)
		if ctx.Err() != nil {
			return subscribed
		}
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &ne) && ne.Timeout() && !pinged:
			// Quiet for a while: check that the connection is alive.
			if err := ps.Ping(ctx); err != nil {
				return subscribed
			}
			pinged = true
			continue
		default:
			return subscribed
		}
		pinged = false
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind == "subscribe" {
				subscribed = true
				notify(out)
			}
		case *goredis.Message:
			notify(out)
		}
	}
}
