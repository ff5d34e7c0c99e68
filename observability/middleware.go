package observability

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
)

// RequestIDHeader carries the request id in and out.
const RequestIDHeader = "X-Request-Id"

const maxRequestIDLen = 64

type ctxKey int

const (
	requestIDKey ctxKey = iota
	logAttrsKey
)

// RequestID gives every request an id: a sane incoming X-Request-Id (1 to
// 64 characters of [A-Za-z0-9-_.]) is kept, anything else is replaced by a
// random one. The id is set on the response header and put in the request
// context (RequestIDFrom).
func RequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set(RequestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey, id)))
	})
}

// RequestIDFrom returns the request id set by RequestID, or "".
func RequestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand aborts the process instead)
	return hex.EncodeToString(b[:])
}

// logAttrs is the mutable holder that AccessLog puts in the request
// context; handlers (possibly from several goroutines) add to it.
type logAttrs struct {
	mu    sync.Mutex
	attrs []slog.Attr
}

// AddLogAttrs adds attributes to the access log line of the request (the
// credential id, attempts, outcome, model). It does nothing outside
// AccessLog. A later attribute with the same key does not replace an
// earlier one: both are logged.
func AddLogAttrs(ctx context.Context, attrs ...slog.Attr) {
	h, _ := ctx.Value(logAttrsKey).(*logAttrs)
	if h == nil {
		return
	}
	h.mu.Lock()
	h.attrs = append(h.attrs, attrs...)
	h.mu.Unlock()
}

// AccessLog logs one line per request when it ends, with method, path
// (without the query string, which may hold secrets), route (the chi route
// pattern), status, bytes, duration_ms, request_id, remote (the peer
// address without the port) and the attributes added with AddLogAttrs.
// Status 5xx logs at level error, others at info. A request whose handler
// panicked through (http.ErrAbortHandler) is logged with aborted=true.
//
// Use it inside the chi router (r.Use) below RequestID; when it wraps a
// chi router from outside, it installs the route context that the router
// then fills.
func AccessLog(logger *slog.Logger) func(http.Handler) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rw := wrapWriter(w)
			holder := &logAttrs{}
			ctx := context.WithValue(r.Context(), logAttrsKey, holder)
			ctx, rctx := withRouteContext(ctx)
			r = r.WithContext(ctx)
			completed := false
			defer func() {
				status := rw.Status()
				level := slog.LevelInfo
				if status >= 500 {
					level = slog.LevelError
				}
				attrs := make([]slog.Attr, 0, 12)
				attrs = append(attrs,
					slog.String("method", r.Method),
					slog.String("path", r.URL.Path),
					slog.String("route", routeOf(rctx)),
					slog.Int("status", status),
					slog.Int64("bytes", rw.bytes),
					slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
					slog.String("request_id", RequestIDFrom(ctx)),
					slog.String("remote", remoteHost(r.RemoteAddr)),
				)
				if !completed {
					attrs = append(attrs, slog.Bool("aborted", true))
				}
				holder.mu.Lock()
				attrs = append(attrs, holder.attrs...)
				holder.mu.Unlock()
				logger.LogAttrs(context.WithoutCancel(ctx), level, "request", attrs...)
			}()
			next.ServeHTTP(rw, r)
			completed = true
		})
	}
}

// withRouteContext returns ctx with a chi route context, installing an
// empty one when there is none, and that route context.
func withRouteContext(ctx context.Context) (context.Context, *chi.Context) {
	if rctx := chi.RouteContext(ctx); rctx != nil {
		return ctx, rctx
	}
	rctx := chi.NewRouteContext()
	return context.WithValue(ctx, chi.RouteCtxKey, rctx), rctx
}

// routeOf returns the matched chi route pattern, or "unmatched". Call it
// after the router has served the request.
func routeOf(rctx *chi.Context) string {
	if p := rctx.RoutePattern(); p != "" {
		return p
	}
	return "unmatched"
}

func remoteHost(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// Recover turns a panic in a handler into a logged error and, when nothing
// was sent yet, a 500 rendered by render (a plain-text 500 when render is
// nil). The log line carries the panic value, the stack, the method, path
// and request id, never the request body. http.ErrAbortHandler is
// re-panicked untouched; a panic after the response started is logged and
// then turned into http.ErrAbortHandler, so that the client sees a broken
// response rather than one that looks complete.
func Recover(logger *slog.Logger, render func(w http.ResponseWriter, r *http.Request)) func(http.Handler) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if render == nil {
		render = func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "internal server error", http.StatusInternalServerError)
		}
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rw := wrapWriter(w)
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if v == http.ErrAbortHandler { // compared as net/http does
					panic(v)
				}
				started := rw.wroteHeader()
				logger.LogAttrs(context.WithoutCancel(r.Context()), slog.LevelError, "panic in handler",
					slog.String("panic", fmt.Sprint(v)),
					slog.String("stack", string(debug.Stack())),
					slog.String("method", r.Method),
					slog.String("path", r.URL.Path),
					slog.String("request_id", RequestIDFrom(r.Context())),
					slog.Bool("response_started", started),
				)
				if started {
					panic(http.ErrAbortHandler)
				}
				// Drop what the handler had prepared (a stream's content
				// type, say) before rendering the error; keep the request id.
				h := rw.Header()
				for k := range h {
					if k != RequestIDHeader {
						delete(h, k)
					}
				}
				render(rw, r)
			}()
			next.ServeHTTP(rw, r)
		})
	}
}
