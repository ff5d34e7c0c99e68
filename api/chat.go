package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/observability"
	"github.com/atlassian-proxy/atlassian-proxy/openaierr"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/usage"
)

// chatCompletions answers POST /v1/chat/completions (behind requireToken).
func (a *API) chatCompletions(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	req, m, aerr := a.readChatRequest(w, r)
	if aerr != nil {
		aerr.log(ctx)
		aerr.render(w)
		return
	}
	observability.AddLogAttrs(ctx, slog.String("model", m.ID), slog.Bool("stream", req.Stream))
	switch {
	case req.Stream && len(req.Tools) == 0:
		a.streamChat(w, r, m, req)
	case req.Stream:
		// The upstream's streamed tool calls are of unknown shape: call it
		// without streaming and produce the OpenAI stream here.
		a.streamCompleted(w, r, m, req)
	default:
		a.completeChat(w, r, m, req)
	}
}

// readChatRequest checks the content type, reads the body under the size
// limit, decodes and validates it, and resolves the model.
func (a *API) readChatRequest(w http.ResponseWriter, r *http.Request) (*gateway.ChatRequest, gateway.Model, *apiError) {
	if aerr := checkContentType(r.Header.Get("Content-Type")); aerr != nil {
		return nil, gateway.Model{}, aerr
	}
	buf := bodyBuffers.Get().(*bytes.Buffer)
	defer putBodyBuffer(buf)
	if aerr := a.readBody(w, r, buf); aerr != nil {
		return nil, gateway.Model{}, aerr
	}
	// decodeChatRequest copies what it keeps: buf can be reused after it.
	req, aerr := decodeChatRequest(buf.Bytes())
	if aerr != nil {
		return nil, gateway.Model{}, aerr
	}
	m, ok := a.catalog.Lookup(req.Model)
	if !ok {
		return nil, gateway.Model{}, modelNotFound(req.Model)
	}
	if tok, ok := tokenFrom(r.Context()); ok && !a.allows(tok, m) {
		return nil, gateway.Model{}, &apiError{
			status: http.StatusForbidden, typ: openaierr.TypePermission, code: "model_not_allowed", param: "model",
			message: fmt.Sprintf("This API key is not allowed to use the model '%s'.", clip(req.Model, 200)),
		}
	}
	return req, m, nil
}

// checkContentType accepts application/json (with parameters) and any
// application/*+json type. A request without a Content-Type is accepted
// too, as JSON: only a body declared as something else is refused, which
// catches curl's -d (form-encoded) with a message saying what to send.
func checkContentType(ct string) *apiError {
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && (mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return nil
	}
	return &apiError{
		status: http.StatusUnsupportedMediaType, typ: openaierr.TypeInvalidRequest, code: "unsupported_media_type",
		message: fmt.Sprintf("Unsupported Content-Type '%s': the body must be JSON sent with 'Content-Type: application/json' "+
			"(with curl, add -H 'Content-Type: application/json').", clip(ct, 100)),
	}
}

// bodyBuffers recycles request body buffers; large ones are dropped.
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func putBodyBuffer(b *bytes.Buffer) {
	if b.Cap() > 1<<20 {
		return
	}
	b.Reset()
	bodyBuffers.Put(b)
}

// bodyDeadline gives the client BodyReadTimeout to send a request body,
// from the start of the request: a client that trickles its body gets a
// 408 (readBody) instead of holding a handler for ever, and a request
// refused before its body is read (401, 415, 404 …) cannot hold the
// server's drain of that body for ever either. readBody lifts the deadline
// once the body is in, so that the response (a stream, perhaps) is not cut
// by it. A writer without deadlines (ErrNotSupported) leaves the server's
// own ReadTimeout as the only bound.
func (a *API) bodyDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 { // an empty body has nothing to wait for
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(a.cfg.BodyReadTimeout))
		}
		next.ServeHTTP(w, r)
	})
}

// readBody reads the whole body into buf, at most MaxBodyBytes, within
// the deadline bodyDeadline set, and lifts that deadline. After a failed
// read the deadline stays, so that the server drops the connection rather
// than wait for the rest of the body.
func (a *API) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) *apiError {
	limit := a.cfg.MaxBodyBytes
	if r.ContentLength > limit {
		return tooLarge(limit)
	}
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + 1)
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return tooLarge(limit)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			w.Header().Set("Connection", "close")
			return bodyTimeout(a.cfg.BodyReadTimeout)
		}
		return badRequest("", "The request body could not be read.")
	}
	if r.ContentLength != 0 {
		_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	}
	return nil
}

func bodyTimeout(d time.Duration) *apiError {
	return &apiError{
		status: http.StatusRequestTimeout, typ: openaierr.TypeInvalidRequest, code: "request_timeout",
		message: fmt.Sprintf("The request body was not received within %s. Please retry.", d),
	}
}

func tooLarge(limit int64) *apiError {
	return &apiError{
		status: http.StatusRequestEntityTooLarge, typ: openaierr.TypeInvalidRequest, code: "request_too_large",
		message: fmt.Sprintf("The request body is larger than the limit of %d bytes.", limit),
	}
}

// finish returns the lease with the attempt's outcome (exactly once per
// lease: every path below calls it once) and logs who served the request.
// A success counts its tokens under model, the catalog's canonical id.
func (a *API) finish(ctx context.Context, lease *pool.Lease, model string, o pool.Outcome, u pool.Usage) {
	lease.Done(o, u)
	if o == pool.OutcomeSuccess {
		a.metrics.usage(model, u)
	}
	if a.usage != nil {
		ev := usage.Event{
			CredentialID: lease.Credential().ID, TokenID: tokenID(ctx), Model: model,
			InputTokens: u.InputTokens, OutputTokens: u.OutputTokens,
		}
		if o != pool.OutcomeSuccess && o != pool.OutcomeCanceled {
			ev.Failed, ev.Error = true, "stream ended early: "+o.String()
		}
		a.usage.Record(ev)
	}
	observability.AddLogAttrs(ctx,
		slog.String("credential_id", lease.Credential().ID),
		slog.Int("attempts", lease.Attempts()),
		slog.String("outcome", o.String()),
		slog.Int64("input_tokens", u.InputTokens),
		slog.Int64("output_tokens", u.OutputTokens),
	)
}

func poolUsage(u *gateway.Usage) pool.Usage {
	if u == nil {
		return pool.Usage{}
	}
	return pool.Usage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens}
}

// complete runs a non-streamed upstream call through the dispatcher.
// onAttempt, if set, is called as each attempt starts (a credential is
// leased).
func (a *API) complete(ctx context.Context, m gateway.Model, req *gateway.ChatRequest, onAttempt func()) (*gateway.ChatCompletion, *pool.Lease, error) {
	var resp *gateway.ChatCompletion
	lease, err := a.disp.Do(ctx, func(_ context.Context, cred pool.Credential) error {
		if onAttempt != nil {
			onAttempt()
		}
		// Not the attempt's context: its RETRY_DEADLINE bounds finding a
		// credential and a stream's first event, but a non-streamed answer
		// only arrives when the whole completion is generated, which may take
		// minutes. A hang is bounded by the transport's response timeout; the
		// client leaving still cancels at once.
		c, err := a.up.Complete(ctx, cred, m, req)
		if err != nil {
			a.attemptFailed(ctx, cred, m.ID, err)
			return err
		}
		resp = c
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return resp, lease, nil
}

// completeChat answers a non-streamed request with a chat.completion.
func (a *API) completeChat(w http.ResponseWriter, r *http.Request, m gateway.Model, req *gateway.ChatRequest) {
	resp, lease, err := a.complete(r.Context(), m, req, nil)
	if err != nil {
		a.renderUpstreamError(w, r, m.ID, err)
		return
	}
	// The upstream did its work: a client that leaves now does not change that.
	a.finish(r.Context(), lease, m.ID, pool.OutcomeSuccess, poolUsage(resp.Usage))
	openaierr.WriteJSON(w, http.StatusOK, resp)
}

// streamCompleted answers a streamed request with tools: one
// non-streamed upstream call, replayed as an OpenAI stream. The upstream
// answers such a call only once the whole answer is written, which can
// take minutes: once a credential is leased and STREAM_KEEPALIVE passes
// without the answer, the event stream starts with keep-alive comments, so
// that proxies and clients that cut silent connections keep this one; a
// failure after that ends the stream with an SSE error event (no [DONE])
// instead of an HTTP error status. Until then (in the queue, say) errors
// are HTTP errors as for any request. When the shutdown grace is over
// (AbortStreams), the call is abandoned with a server_shutting_down answer.
func (a *API) streamCompleted(w http.ResponseWriter, r *http.Request, m gateway.Model, req *gateway.ChatRequest) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	ka := a.keepAliveWhileSilent(w, cancel)
	defer ka.stop() // also when complete panics: the goroutine must not outlive the handler
	resp, lease, err := a.complete(ctx, m, req, ka.begin)
	sw := ka.stop()
	if err != nil {
		var out errorAnswer = httpAnswer{w}
		if sw != nil {
			out = sseAnswer{ctx: r.Context(), sw: sw}
		}
		switch {
		case ka.aborted:
			if sw != nil {
				a.metrics.abort(abortShutdown)
			}
			out.fail(http.StatusServiceUnavailable, openaierr.TypeServer, "server_shutting_down",
				"The server is shutting down and could not finish this answer. Please retry.", time.Second)
			return
		case sw == nil:
		case r.Context().Err() != nil:
			a.metrics.abort(abortClientGone)
		case refusal(err):
			a.metrics.abort(abortUpstreamRefused)
		default:
			a.metrics.abort(abortUpstreamBroken)
		}
		a.answerUpstreamError(r.Context(), out, m.ID, err)
		return
	}
	a.finish(r.Context(), lease, m.ID, pool.OutcomeSuccess, poolUsage(resp.Usage))
	if sw == nil {
		sw = startSSE(w)
	}
	ft := a.newFirstToken(r.Context(), m.ID)
	chunks := gateway.Chunks(resp)
	for i := range chunks {
		if sw.data(&chunks[i]) != nil {
			a.metrics.abort(abortClientGone)
			return // the client went away
		}
		ft.observe(&chunks[i])
	}
	if includeUsage(req) {
		var u gateway.Usage
		if resp.Usage != nil {
			u = *resp.Usage
		}
		uc := gateway.UsageChunk(resp.ID, resp.Created, resp.Model, u)
		if sw.data(&uc) != nil {
			a.metrics.abort(abortClientGone)
			return
		}
	}
	if sw.done() != nil {
		a.metrics.abort(abortClientGone)
	}
}

func includeUsage(req *gateway.ChatRequest) bool {
	return req.StreamOptions != nil && req.StreamOptions.IncludeUsage
}
