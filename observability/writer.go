package observability

import (
	"net/http"
)

// responseWriter records the status and the body size of a response for
// the access log and the metrics. It keeps streaming working: Flush passes
// through, and Unwrap lets http.ResponseController reach the writer below
// (for Hijack, SetWriteDeadline, EnableFullDuplex). The middlewares of this
// package share one responseWriter per request.
type responseWriter struct {
	http.ResponseWriter
	status int   // first final status written; 0 = none yet
	bytes  int64 // body bytes written
}

// wrapWriter returns w itself when it is already a responseWriter, so that
// stacked middlewares of this package record into one place.
func wrapWriter(w http.ResponseWriter) *responseWriter {
	if rw, ok := w.(*responseWriter); ok {
		return rw
	}
	return &responseWriter{ResponseWriter: w}
}

func (w *responseWriter) WriteHeader(code int) {
	// 1xx informational responses (except 101 Switching Protocols) are
	// not the final status.
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Flush sends buffered data to the client; a no-op when the writer below
// cannot flush.
func (w *responseWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
		return
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap returns the writer below, for http.ResponseController.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Status returns the status sent, 200 when the handler wrote nothing.
func (w *responseWriter) Status() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// wroteHeader reports whether the status line has gone out.
func (w *responseWriter) wroteHeader() bool { return w.status != 0 }
