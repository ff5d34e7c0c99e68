package observability

import "net/http"

// Health is the liveness handler: 200 {"status":"ok"} as long as the
// process serves HTTP. Readiness (the store answers) belongs to the api.
func Health(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(`{"status":"ok"}`))
}
