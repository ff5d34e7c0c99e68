package fake

import (
	"net/http/httptest"
	"testing"
)

// Server is a Gateway served on a loopback port by httptest.
type Server struct {
	*Gateway
	// URL is the base URL to configure a gateway.Client with.
	URL  string
	HTTP *httptest.Server
}

// Start serves a new Gateway (configured by the first opts, if any) on a
// loopback port until the test ends. At cleanup it first releases hanging
// and slow requests, then closes the server.
func Start(t testing.TB, opts ...Options) *Server {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	g := New(o)
	hs := httptest.NewServer(g)
	t.Cleanup(func() {
		g.Close()
		hs.Close()
	})
	return &Server{Gateway: g, URL: hs.URL, HTTP: hs}
}
