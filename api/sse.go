package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/observability"
	"github.com/atlassian-proxy/atlassian-proxy/openaierr"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// newEncoder returns a JSON encoder that leaves <, > and & alone.
func newEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

// sseWriter writes Server-Sent Events, flushing each one. It reuses one
// buffer and one encoder for every event.
type sseWriter struct {
	w   io.Writer
	rc  *http.ResponseController
	buf bytes.Buffer
	enc *json.Encoder
}

// startSSE sends the headers of an event stream and returns its writer.
func startSSE(w http.ResponseWriter) *sseWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// A stream lasts as long as the model writes: a server-wide write
	// timeout must not cut it (idle and header timeouts still apply).
	_ = rc.SetWriteDeadline(time.Time{})
	sw := &sseWriter{w: w, rc: rc}
	sw.enc = newEncoder(&sw.buf)
	return sw
}

// data writes one "data: <json>" event.
func (s *sseWriter) data(v any) error {
	s.buf.Reset()
	s.buf.WriteString("data: ")
	if err := s.enc.Encode(v); err != nil { // Encode ends the JSON with "\n"
		return fmt.Errorf("encode event: %w", err)
	}
	s.buf.WriteByte('\n')
	return s.send()
}

// comment writes an SSE comment (ignored by clients): the keep-alive.
func (s *sseWriter) comment(text string) error {
	s.buf.Reset()
	s.buf.WriteString(": ")
	s.buf.WriteString(text)
	s.buf.WriteString("\n\n")
	return s.send()
}

// done writes the terminating "data: [DONE]".
func (s *sseWriter) done() error {
	s.buf.Reset()
	s.buf.WriteString("data: [DONE]\n\n")
	return s.send()
}

func (s *sseWriter) send() error {
	if _, err := s.w.Write(s.buf.Bytes()); err != nil {
		return err
	}
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// silentWait sends keep-alive comments while the handler waits for an
// upstream answer (keepAliveWhileSilent). Its goroutine starts the event
// stream after STREAM_KEEPALIVE of silence counted from begin (the first
// attempt), and is the only one to write to the response until stop
// returns. It also watches AbortStreams: then it cancels the wait (cancel)
// and sets aborted.
type silentWait struct {
	begun    chan struct{} // closed by begin
	stopc    chan struct{}
	done     chan struct{}
	once     sync.Once // begin
	stopOnce sync.Once
	// Set by the goroutine; read once stop returned (its end happens before).
	aborted bool       // AbortStreams ended the wait
	sw      *sseWriter // the event stream, once started
}

func (a *API) keepAliveWhileSilent(w http.ResponseWriter, cancel context.CancelFunc) *silentWait {
	k := &silentWait{begun: make(chan struct{}), stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(k.done)
		var tick <-chan time.Time
		t := time.NewTimer(a.cfg.StreamKeepAlive)
		t.Stop()
		defer t.Stop()
		begun := k.begun
		for {
			select {
			case <-k.stopc:
				return
			case <-a.aborting:
				k.aborted = true
				cancel()
				return
			case <-begun:
				begun = nil
				t.Reset(a.cfg.StreamKeepAlive)
				tick = t.C
				continue
			case <-tick:
			}
			if k.sw == nil {
				k.sw = startSSE(w)
			}
			if k.sw.comment("keep-alive") != nil {
				return // the client went away: the request's context ends too
			}
			t.Reset(a.cfg.StreamKeepAlive)
		}
	}()
	return k
}

// begin starts the count to the first keep-alive (a credential is leased:
// the wait is the upstream's now, not the queue's). Later calls (retries)
// change nothing.
func (k *silentWait) begin() { k.once.Do(func() { close(k.begun) }) }

// stop ends the keep-alives and returns the event stream they started, or
// nil when none was needed. The response is the caller's again. Calls
// after the first return the same.
func (k *silentWait) stop() *sseWriter {
	k.stopOnce.Do(func() { close(k.stopc) })
	<-k.done
	return k.sw
}

// streamChat answers a streamed request without tools. The dispatcher
// commits to a credential once its stream answered 200 and an event parsed
// that carries more than the role and usage: content of any part type
// (text or not, e.g. a "thinking" part; an empty text does not count), a
// tool call or a finish reason (events carrying only the role or usage
// wait for it); every failure before that fails over silently. After it,
// the chunks are relayed as they come.
func (a *API) streamChat(w http.ResponseWriter, r *http.Request, m gateway.Model, req *gateway.ChatRequest) {
	ctx := r.Context()
	var (
		st     *gateway.Stream
		cancel context.CancelFunc
	)
	lease, err := a.disp.Do(ctx, func(dctx context.Context, cred pool.Credential) error {
		// The stream must outlive Do, whose context may end when Do
		// returns: tie the stream to the request, and to dctx only until
		// the stream is committed.
		sctx, scancel := context.WithCancel(ctx)
		detach := context.AfterFunc(dctx, scancel)
		s, err := a.up.Stream(sctx, cred, m, req)
		if !detach() {
			// dctx ended during the call: report its reason (canceled or
			// timed out), which is what cut the call.
			if err == nil {
				_ = s.Close()
			}
			err = fmt.Errorf("upstream stream: %w", dctx.Err())
		}
		if err != nil {
			scancel()
			a.attemptFailed(ctx, cred, m.ID, err)
			return err
		}
		st, cancel = s, scancel
		return nil
	})
	if err != nil {
		a.renderUpstreamError(w, r, m.ID, err)
		return
	}
	// Deferred, so that the lease is returned even if relay panics
	// (as canceled: a bug of ours is no fault of the credential).
	o, u := pool.OutcomeCanceled, pool.Usage{}
	returned := false
	defer func() {
		if !returned {
			a.metrics.abort(abortPanic) // relay panicked; Recover answers
		}
		a.finish(ctx, lease, m.ID, o, u)
	}()
	o, u = a.relay(ctx, w, st, cancel, includeUsage(req), a.newFirstToken(ctx, m.ID))
	returned = true
}

// nextResult is one answer of gateway.Stream.Next.
type nextResult struct {
	chunk *gateway.ChatCompletionChunk
	err   error
}

// relay copies the upstream stream to the client, with keep-alive
// comments while the upstream is silent, and returns the outcome of the
// attempt and the usage. It owns one reader goroutine, which calls
// st.Next only when asked (so a chunk is never overwritten while it is
// being written) and which it stops and waits for before returning. It
// cancels the upstream (cancel) and closes st before returning.
//
// Every way it ends without [DONE] counts one stream abort; ft observes the
// time to first token.
func (a *API) relay(ctx context.Context, w http.ResponseWriter, st *gateway.Stream, cancel context.CancelFunc, withUsage bool, ft *firstToken) (pool.Outcome, pool.Usage) {
	asks := make(chan struct{}, 1)      // "read the next event"; at most one outstanding
	results := make(chan nextResult, 1) // one answer per ask: the send never blocks
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-asks:
			}
			c, err := a.next(ctx, st)
			results <- nextResult{c, err}
		}
	})
	defer func() {
		close(stop)
		cancel() // unblocks a Next waiting on the upstream
		wg.Wait()
		_ = st.Close()
	}()

	sw := startSSE(w)
	chunks := 0
	usage := func() (pool.Usage, gateway.Usage) {
		if u := st.Usage(); u != nil {
			return poolUsage(u), *u
		}
		return pool.Usage{}, gateway.Usage{}
	}
	keepAlive := time.NewTimer(a.cfg.StreamKeepAlive)
	defer keepAlive.Stop()
	asks <- struct{}{}
	for {
		select {
		case <-ctx.Done():
			a.metrics.abort(abortClientGone)
			return pool.OutcomeCanceled, pool.Usage{}
		case <-a.aborting:
			a.metrics.abort(abortShutdown)
			// The server's shutdown grace is over: not the credential's fault.
			_ = sw.data(openaierr.New(openaierr.TypeServer, "server_shutting_down", "",
				"The server is shutting down and could not finish this answer. Please retry."))
			return pool.OutcomeCanceled, pool.Usage{}
		case <-keepAlive.C:
			if sw.comment("keep-alive") != nil {
				a.metrics.abort(abortClientGone)
				return pool.OutcomeCanceled, pool.Usage{}
			}
			keepAlive.Reset(a.cfg.StreamKeepAlive)
		case res := <-results:
			switch {
			case res.err == nil:
				chunks++
				if sw.data(res.chunk) != nil {
					a.metrics.abort(abortClientGone)
					return pool.OutcomeCanceled, pool.Usage{}
				}
				ft.observe(res.chunk)
				keepAlive.Reset(a.cfg.StreamKeepAlive)
				asks <- struct{}{}
			case errors.Is(res.err, io.EOF):
				pu, gu := usage()
				// The upstream finished its work: that is the outcome,
				// whether or not the client reads the end.
				if withUsage {
					uc := gateway.UsageChunk(st.ID(), st.Created(), st.Model(), gu)
					if sw.data(&uc) != nil {
						a.metrics.abort(abortClientGone)
						return pool.OutcomeSuccess, pu
					}
				}
				if sw.done() != nil {
					a.metrics.abort(abortClientGone)
				}
				observability.AddLogAttrs(ctx, slog.Int("chunks", chunks))
				return pool.OutcomeSuccess, pu
			case ctx.Err() != nil:
				a.metrics.abort(abortClientGone)
				return pool.OutcomeCanceled, pool.Usage{}
			default:
				if errors.Is(res.err, errReaderPanic) {
					a.metrics.abort(abortPanic)
				} else {
					a.metrics.abort(abortUpstreamBroken)
				}
				pu, _ := usage()
				return a.streamBroken(ctx, sw, res.err, chunks), pu
			}
		}
	}
}

// errReaderPanic is the error of a stream read that panicked.
var errReaderPanic = errors.New("api: the stream reader panicked")

// next calls st.Next on the reader goroutine of relay. A panic there
// would end the process (no middleware recovers another goroutine): it is
// logged with its stack and becomes errReaderPanic, which ends the
// client's stream like an upstream break.
func (a *API) next(ctx context.Context, st *gateway.Stream) (c *gateway.ChatCompletionChunk, err error) {
	defer func() {
		if v := recover(); v != nil {
			// The panic value and the stack name code, not data: the
			// stream holds no credential, and the token is never kept.
			a.logger.LogAttrs(ctx, slog.LevelError, "panic in the stream reader",
				slog.String("panic", fmt.Sprint(v)), slog.String("stack", string(debug.Stack())))
			c, err = nil, errReaderPanic
		}
	}()
	return st.Next()
}

// streamBroken ends a committed stream whose upstream failed: an SSE error
// event in OpenAI's error shape and no [DONE], so that no client takes the
// answer for complete.
func (a *API) streamBroken(ctx context.Context, sw *sseWriter, err error, chunks int) pool.Outcome {
	o := pool.OutcomeStreamBroken
	msg := "The upstream stream broke before the answer was complete. Please retry."
	if ge, ok := errors.AsType[*gateway.Error](err); ok {
		if ge.Kind == pool.OutcomeTimeout {
			o = pool.OutcomeTimeout
		}
		if ge.Message != "" {
			msg = "The upstream stream broke before the answer was complete (" + ge.Message + "). Please retry."
		}
	}
	a.logger.LogAttrs(ctx, slog.LevelWarn, "upstream stream broke after commit",
		slog.Int("chunks", chunks), slog.Any("error", err))
	_ = sw.data(openaierr.New(openaierr.TypeServer, "stream_interrupted", "", msg))
	return o
}
