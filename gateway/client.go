package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// Paths under Config.BaseURL (protocol §1–2).
const (
	PathUnifiedChat  = "/rovodev/v2/proxy/ai/v2/beta/chat"
	PathCreditsCheck = "/rovodev/v3/credits/check"
	PathSites        = "/rovodev/v3/sites"
)

// DefaultBaseURL is the Atlassian API origin.
const DefaultBaseURL = "https://api.atlassian.com"

// maxResponseBody bounds a successful non-streamed response body.
const maxResponseBody = 32 << 20

// Config configures a Client. The zero value means the defaults.
type Config struct {
	// BaseURL is the upstream origin, the gateway paths are appended to it
	// (default DefaultBaseURL). Tests point it at gateway/fake.
	BaseURL string
	// UserAgent is sent on every request (default "atlassian-proxy/<module
	// version>"). It must identify this project honestly.
	UserAgent string
	// Logger receives the protocol log (default: none): at info level,
	// once per distinct variant, what the upstream sent that the protocol
	// page leaves open (see observe.go). Secrets are never logged.
	Logger *slog.Logger
}

// Validate reports a malformed BaseURL.
func (c Config) Validate() error {
	if c.BaseURL == "" {
		return nil
	}
	u, err := url.Parse(c.BaseURL)
	if err != nil {
		return fmt.Errorf("gateway: base URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("gateway: base URL %q: scheme must be http or https", c.BaseURL)
	}
	if u.Host == "" {
		return fmt.Errorf("gateway: base URL %q: no host", c.BaseURL)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("gateway: base URL %q: must not carry user info, query or fragment", c.BaseURL)
	}
	return nil
}

// DefaultUserAgent is "atlassian-proxy/<version>", the version taken from
// the build information ("dev" when unknown).
func DefaultUserAgent() string {
	v := "dev"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return "atlassian-proxy/" + v
}

// Client talks to the Atlassian AI Gateway. Safe for concurrent use.
type Client struct {
	base string
	ua   string
	hc   *http.Client
	now  func() time.Time
	obs  *protocolLog // nil: no protocol log
}

// NewClient returns a client sending through hc (nil: a client on
// NewTransport()). hc should have no Timeout (it would cut long streams):
// deadlines come from each call's ctx. Redirects are never followed, so
// the credential headers cannot leak to another host.
func NewClient(cfg Config, hc *http.Client) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = DefaultUserAgent()
	}
	var c http.Client
	if hc != nil {
		c = *hc
	} else {
		c.Transport = NewTransport()
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{
		base: strings.TrimRight(cfg.BaseURL, "/"),
		ua:   cfg.UserAgent,
		hc:   &c,
		now:  time.Now,
		obs:  newProtocolLog(cfg.Logger),
	}, nil
}

// NewTransport returns the transport recommended for the upstream: kept-alive
// connections (64 idle per host, so a busy pool reuses them), HTTP/2 when
// the server offers it, bounded dial/TLS/header waits. A response header
// that takes longer than 5 minutes counts as a timeout.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute, // a non-streamed answer comes whole: long completions take minutes
		ExpectContinueTimeout: time.Second,
	}
}

// basicToken is base64(email:token), the value of both auth headers.
func basicToken(cred pool.Credential) string {
	if cred.Email == "" && cred.Token == "" {
		return ""
	}
	return base64.StdEncoding.EncodeToString([]byte(cred.Email + ":" + cred.Token))
}

// newRequest builds a request with the credential and identity headers.
func (c *Client) newRequest(ctx context.Context, method, path string, cred pool.Credential, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("gateway: build request: %w", err)
	}
	// The keys are written in canonical form and the values share one
	// backing array: one allocation instead of one per header.
	tok := basicToken(cred)
	vals := make([]string, 0, 7)
	add := func(key, v string) {
		vals = append(vals, v)
		req.Header[key] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	add("Authorization", "Basic "+tok)
	add("X-Atlassian-Encodedtoken", tok)
	if cred.CloudID != "" {
		add("X-Atlassian-Cloudid", cred.CloudID)
		add("X-Rovodev-Billing-Cloudid", cred.CloudID)
	}
	add("User-Agent", c.ua)
	add("Accept", "application/json")
	if body != nil {
		add("Content-Type", "application/json")
	}
	return req, nil
}

// send performs req. A non-2xx status is read (bounded), closed and
// returned as an *Error; a 2xx response is returned open.
func (c *Client) send(ctx context.Context, req *http.Request, cred pool.Credential) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, transportError(ctx, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if err != nil && ctx.Err() != nil {
		return nil, transportError(ctx, err)
	}
	c.obs.errorAnswer(ctx, resp.StatusCode, resp.Header.Get("Content-Type"), body, cred)
	return nil, classify(resp, body, cred, c.now())
}

// chat posts a unified-chat request.
func (c *Client) chat(ctx context.Context, cred pool.Credential, m Model, req *ChatRequest, stream bool) (*http.Response, error) {
	if m.Route != RouteUnified {
		return nil, &Error{Kind: pool.OutcomeClientError, Message: fmt.Sprintf("model %q uses route %q, which this proxy cannot serve", m.ID, m.Route)}
	}
	body, err := buildRequest(m, req, stream)
	if err != nil {
		return nil, &Error{Kind: pool.OutcomeClientError, Message: "the request has no messages", Err: err}
	}
	hreq, err := c.newRequest(ctx, http.MethodPost, PathUnifiedChat, cred, body)
	if err != nil {
		return nil, err
	}
	if stream {
		hreq.Header.Set("Accept", "text/event-stream")
	}
	return c.send(ctx, hreq, cred)
}

// clientModel is the model name echoed to the client.
func clientModel(m Model, req *ChatRequest) string {
	if req.Model != "" {
		return req.Model
	}
	return m.ID
}

// Complete sends a non-streamed chat request. The completion's model is the
// name the client asked for. Failures are *Error.
func (c *Client) Complete(ctx context.Context, cred pool.Credential, m Model, req *ChatRequest) (*ChatCompletion, error) {
	resp, err := c.chat(ctx, cred, m, req, false)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	model := clientModel(m, req)
	if isEventStream(resp) { // the upstream streamed anyway: collect it
		s, err := c.openStream(ctx, resp, model)
		if err != nil {
			return nil, err
		}
		return s.collect()
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil {
		return nil, transportError(ctx, err)
	}
	if len(body) > maxResponseBody {
		return nil, &Error{Status: resp.StatusCode, Kind: pool.OutcomeServerError, Message: "the upstream response is too large"}
	}
	cc, err := c.completion(ctx, body, model)
	if err != nil {
		return nil, &Error{Status: resp.StatusCode, Kind: pool.OutcomeServerError, Message: "the upstream response is malformed", Err: err}
	}
	return cc, nil
}

// completion decodes a non-streamed response body, notes its protocol
// variants and translates it.
func (c *Client) completion(ctx context.Context, body []byte, model string) (*ChatCompletion, error) {
	r, err := decodeResponse(body)
	if err != nil {
		return nil, err
	}
	c.obs.response(ctx, r, modeJSON)
	return translateCompletion(r, model, c.now()), nil
}

// Stream sends a streamed chat request. It returns once the upstream
// answered 200 and sent an event that carries more than the role and
// usage: content (non-empty text or a part of any other type, such as a
// "thinking" part), a tool call or a finish reason. Events before it that
// carry only the role or usage are kept and delivered after it. Until it
// returns, nothing has reached the caller's client, which can still fail
// over: a break before then is an *Error with OutcomeStreamBroken. The
// caller must Close the stream.
func (c *Client) Stream(ctx context.Context, cred pool.Credential, m Model, req *ChatRequest) (*Stream, error) {
	resp, err := c.chat(ctx, cred, m, req, true)
	if err != nil {
		return nil, err
	}
	model := clientModel(m, req)
	if isJSON(resp) { // the upstream answered with one JSON body
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
		if err != nil {
			return nil, streamError(ctx, err, "the upstream stream broke before its first event")
		}
		cc, err := c.completion(ctx, body, model)
		if err != nil {
			return nil, &Error{Status: resp.StatusCode, Kind: pool.OutcomeStreamBroken, Message: "the upstream response is malformed", Err: err}
		}
		return streamOf(cc), nil
	}
	s, err := c.openStream(ctx, resp, model)
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	return s, nil
}

// isEventStream reports an SSE answer (Complete reads anything else as JSON).
func isEventStream(resp *http.Response) bool {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return mt == "text/event-stream"
}

// isJSON reports a JSON answer (Stream reads anything else as SSE).
func isJSON(resp *http.Response) bool {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// Credits is the body of credits/check (protocol §1).
type Credits struct {
	Status            string         `json:"status"` // OK, RATE_LIMITED, USER_BLOCKED, UNKNOWN
	Balance           CreditsBalance `json:"balance"`
	Message           string         `json:"message,omitempty"`
	RetryAfterSeconds int64          `json:"retryAfterSeconds,omitempty"`
}

// CreditsBalance is a credential's credit balance.
type CreditsBalance struct {
	MonthlyTotal     int64 `json:"monthlyTotal"`
	MonthlyUsed      int64 `json:"monthlyUsed"`
	MonthlyRemaining int64 `json:"monthlyRemaining"`
	DailyTotal       int64 `json:"dailyTotal"`
	DailyUsed        int64 `json:"dailyUsed"`
	DailyRemaining   int64 `json:"dailyRemaining"`
}

// CheckCredits asks credits/check about cred. A 200 whose status is
// USER_BLOCKED, and a 403, are *Error{Kind: OutcomeForbidden}, the former
// (and a 403 that says so) with Code CodeUserBlocked; a 401 is
// OutcomeUnauthorized. See IsUserBlocked.
func (c *Client) CheckCredits(ctx context.Context, cred pool.Credential) (*Credits, error) {
	var cr struct {
		Status            string           `json:"status"`
		Balance           *json.RawMessage `json:"balance"`
		Message           string           `json:"message"`
		RetryAfterSeconds json.RawMessage  `json:"retryAfterSeconds"`
	}
	status, err := c.getJSON(ctx, cred, PathCreditsCheck, &cr)
	if err != nil {
		var ge *Error
		if errors.As(err, &ge) && ge.Status == http.StatusForbidden && ge.Code == CodeUserBlocked {
			ge.Message = "the Atlassian user is blocked"
		}
		return nil, err
	}
	out := &Credits{Status: cr.Status, Message: sanitize(cr.Message, cred)}
	if cr.Balance != nil {
		var b struct {
			MonthlyTotal, MonthlyUsed, MonthlyRemaining flexInt
			DailyTotal, DailyUsed, DailyRemaining       flexInt
		}
		if json.Unmarshal(*cr.Balance, &b) == nil {
			out.Balance = CreditsBalance{
				MonthlyTotal: int64(b.MonthlyTotal), MonthlyUsed: int64(b.MonthlyUsed), MonthlyRemaining: int64(b.MonthlyRemaining),
				DailyTotal: int64(b.DailyTotal), DailyUsed: int64(b.DailyUsed), DailyRemaining: int64(b.DailyRemaining),
			}
		}
	}
	if d, ok := parseSeconds(cr.RetryAfterSeconds); ok {
		out.RetryAfterSeconds = int64(d / time.Second)
	}
	if out.Status == CodeUserBlocked {
		return nil, &Error{Status: status, Kind: pool.OutcomeForbidden, Code: CodeUserBlocked, Message: "the Atlassian user is blocked"}
	}
	return out, nil
}

// IsUserBlocked reports whether err says the credential's user is blocked
// (credits/check's USER_BLOCKED).
func IsUserBlocked(err error) bool {
	var ge *Error
	return errors.As(err, &ge) && ge.Code == CodeUserBlocked
}

// Site is one Atlassian site a credential can use (GET /rovodev/v3/sites).
type Site struct {
	SiteID                                string `json:"siteId"`
	SiteURL                               string `json:"siteUrl"`
	HasActiveRovoDevSKU                   bool   `json:"hasActiveRovoDevSKU"`
	HasActiveRovoDevEverywhereEligibleSKU bool   `json:"hasActiveRovoDevEverywhereEligibleSKU"`
	IsTrial                               bool   `json:"isTrial"`
}

// Sites lists the credential's sites; a site id is the cloud id to bill.
func (c *Client) Sites(ctx context.Context, cred pool.Credential) ([]Site, error) {
	var body struct {
		Sites []Site `json:"sites"`
	}
	if _, err := c.getJSON(ctx, cred, PathSites, &body); err != nil {
		return nil, err
	}
	return body.Sites, nil
}

// getJSON GETs path and decodes a 2xx body into v; it returns the status.
func (c *Client) getJSON(ctx context.Context, cred pool.Credential, path string, v any) (int, error) {
	req, err := c.newRequest(ctx, http.MethodGet, path, cred, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.send(ctx, req, cred)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody*16))
	if err != nil {
		return 0, transportError(ctx, err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return 0, &Error{Status: resp.StatusCode, Kind: pool.OutcomeServerError, Message: "the upstream response is malformed", Err: err}
	}
	return resp.StatusCode, nil
}
