package fake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Fault is what the fake does with a chat request instead of (or while)
// answering it. The zero value answers normally.
type Fault string

// Faults, following protocol §3.
const (
	OK                  Fault = ""                       // 200 with a completion or a stream
	RateLimitMinute     Fault = "rate_limit_minute"      // 429 MINUTE_LIMIT_EXCEEDED
	RateLimitDaily      Fault = "rate_limit_daily"       // 429 DAILY_LIMIT_EXCEEDED
	Unauthorized        Fault = "unauthorized"           // 401 (credits/check too)
	Forbidden           Fault = "forbidden"              // 403 on chat; credits/check stays OK
	UserBlocked         Fault = "user_blocked"           // 403 on chat; credits/check 403 USER_BLOCKED
	BadRequest          Fault = "bad_request"            // 400 {"message": Behavior.Message}
	ContextOverflow     Fault = "context_overflow"       // 400 "… exceed context limit … 'statusCode': 413"
	TooLarge            Fault = "too_large"              // 413
	InternalError       Fault = "internal_error"         // 500, plain-text body
	BadGateway          Fault = "bad_gateway"            // 502, HTML body
	Unavailable         Fault = "unavailable"            // 503, JSON body
	Overloaded          Fault = "overloaded"             // 529, Anthropic's overloaded body
	Status              Fault = "status"                 // Behavior.Status with {"message": Behavior.Message}
	Hang                Fault = "hang"                   // no answer until the client cancels (or Close)
	Drop                Fault = "drop"                   // connection closed without an answer
	CutBeforeFirstEvent Fault = "cut_before_first_event" // 200 headers, then the connection is cut
	CutMidStream        Fault = "cut_mid_stream"         // Behavior.CutAfter events, then the connection is cut
	CutAfterFinish      Fault = "cut_after_finish"       // every event (the last with its finish_reason), then a cut instead of [DONE]; a non-streamed answer is whole
	Malformed           Fault = "malformed"              // 200 with a body that does not parse
)

// Faults lists every fault, for flags and table tests.
func Faults() []Fault {
	return []Fault{OK, RateLimitMinute, RateLimitDaily, Unauthorized, Forbidden, UserBlocked,
		BadRequest, ContextOverflow, TooLarge, InternalError, BadGateway, Unavailable, Overloaded,
		Status, Hang, Drop, CutBeforeFirstEvent, CutMidStream, CutAfterFinish, Malformed}
}

// ParseFault accepts a Fault's name ("ok" for OK).
func ParseFault(s string) (Fault, error) {
	if s == "ok" {
		return OK, nil
	}
	for _, f := range Faults() {
		if string(f) == s && s != "" {
			return f, nil
		}
	}
	names := []string{"ok"}
	for _, f := range Faults()[1:] {
		names = append(names, string(f))
	}
	return OK, fmt.Errorf("fake: unknown fault %q (one of: %s)", s, strings.Join(names, ", "))
}

// Content is the form the upstream gives message.content in.
type Content string

// Content forms.
const (
	ContentParts  Content = ""       // [{"type":"text","text":…}] (the gateway's form)
	ContentString Content = "string" // a plain string
	ContentNull   Content = "null"   // null (no text)
	ContentEmpty  Content = "empty"  // [] (no text)
)

// ToolCall is a tool call the fake answers with. Arguments is sent as is:
// an object (`{"city":"Paris"}`), a JSON string (`"{\"city\":\"Paris\"}"`)
// or `null`; nil omits the key.
type ToolCall struct {
	ID        string
	Name      string
	Arguments json.RawMessage
}

// Behavior is how the fake answers one chat request of a credential.
type Behavior struct {
	Fault Fault

	// RetryAfterSeconds is the 429 body's retryAfterSeconds (default 30 for
	// a minute limit, 3600 for a daily one; -1 omits it, also from
	// credits/check).
	RetryAfterSeconds int
	// RetryAfterHeader, when set, is sent as the Retry-After header (429, 503).
	RetryAfterHeader string
	// Message is the error message of BadRequest, Status, ContextOverflow.
	Message string
	// Status is the HTTP status of Fault Status.
	Status int
	// CutAfter is how many events CutMidStream sends before the cut
	// (default 2: the role event and one text event).
	CutAfter int

	// Text is the answer (default Options.Text). Pieces, when set, are the
	// stream's text events instead of Text split after each space.
	Text   string
	Pieces []string
	// Content is the form of message.content.
	Content Content
	// ToolCalls are returned on the last event / in the message.
	ToolCalls []ToolCall
	// ToolCallDeltas streams the tool calls OpenAI's way instead, before
	// the last event: per call one event with its index, id, type, name and
	// empty arguments, then one event per piece of its arguments (at most
	// ArgumentPiece bytes, default 8) carrying only the index and the piece.
	ToolCallDeltas bool
	ArgumentPiece  int
	// FinishReason is the upstream's (default "end_turn", or "tool_use"
	// with tool calls); OmitFinishReason leaves it out.
	FinishReason     string
	OmitFinishReason bool
	// NoUsage leaves platform_attributes.metrics.usage out.
	NoUsage bool
	// NoDone ends a stream at EOF without `data: [DONE]`.
	NoDone bool
	// NoIDs leaves id, created and choices[].index out.
	NoIDs bool
	// EventDelay is slept before each stream event after the first.
	EventDelay time.Duration
	// Thinking, when set, is a reasoning part that comes before the
	// answer: a stream sends, right after its role event, one event whose
	// only content is [{"type":"thinking","thinking":Thinking}] (in every
	// Content form; it counts towards CutAfter); a non-streamed answer in
	// a list form (ContentParts, ContentEmpty) starts its content with
	// that part.
	Thinking string
	// ThinkingTime is slept after the thinking event, before the next one
	// (a model that reasons long before its first text), on top of
	// EventDelay.
	ThinkingTime time.Duration
}

// Credential is an account the fake accepts.
type Credential struct {
	ID      string // default: Email
	Email   string
	Token   string
	CloudID string   // returned by sites; not required on requests
	Default Behavior // the permanent behaviour
}

// Options configure a Gateway.
type Options struct {
	Credentials []Credential
	// Latency is slept before every answer.
	Latency time.Duration
	// Text is the default answer.
	Text string
	// Models are the upstream ids accepted as platform_attributes.model
	// (nil: those of protocol §5); AnyModel accepts every non-empty one.
	Models   []string
	AnyModel bool
	// MaxBody bounds a request body (default 8 MiB); larger ones get 413.
	MaxBody int64
	// Now is the clock for `created` (default time.Now).
	Now func() time.Time
	// KeepRequests bounds the recorded requests to the latest N (0: keep
	// all), for benchmarks that send millions. Stats are always complete.
	KeepRequests int
}

// DefaultText is the default answer.
const DefaultText = "Hello from the fake Atlassian gateway."

// KnownModels are the upstream ids of protocol §5.
var KnownModels = []string{
	"claude-3-5-sonnet-v2@20241022", "claude-3-7-sonnet@20250219", "claude-sonnet-4@20250514",
	"claude-opus-4@20250514", "anthropic.claude-3-5-sonnet-20241022-v2:0", "anthropic.claude-3-7-sonnet-20250219-v1:0",
	"anthropic.claude-sonnet-4-20250514-v1:0", "anthropic.claude-opus-4-20250514-v1:0", "gemini-2.0-flash-001",
	"gemini-2.5-pro-preview-03-25", "gemini-2.5-flash-preview-04-17",
	"anthropic.claude-haiku-4-5-20251001-v1:0", "anthropic.claude-sonnet-4-5-20250929-v1:0",
	"anthropic.claude-opus-4-5-20251101-v1:0", "anthropic.claude-opus-4-6-v1:0",
	"claude-sonnet-4-5@20250929", "claude-opus-4-6", "gpt-5-2025-08-07",
}

// Request is one recorded request.
type Request struct {
	Time         time.Time
	Method       string
	Path         string
	CredentialID string // "" when authentication failed
	Email        string
	Header       http.Header
	Body         []byte
	Model        string // platform_attributes.model of a chat request
	Stream       bool   // request_payload.stream of a chat request
	Fault        Fault  // the behaviour applied
	Status       int    // the status answered; 0 when the connection was cut before one
}

// Stats are a credential's counters.
type Stats struct {
	Requests    int // chat requests that passed authentication
	InFlight    int // chat requests being answered now
	MaxInFlight int // the most chat requests ever answered at once
}

// Gateway is the fake. It is an http.Handler and safe for concurrent use.
type Gateway struct {
	opts   Options
	models map[string]bool

	mu       sync.Mutex
	accounts map[string]*account // by email
	byID     map[string]*account
	requests []Request
	dropped  int // requests recorded and then dropped (KeepRequests)
	seq      int

	closeOnce sync.Once
	closed    chan struct{}
}

type account struct {
	cred  Credential
	queue []queued
	stats Stats
}

type queued struct {
	b Behavior
	n int
}

// New returns a fake gateway.
func New(opts Options) *Gateway {
	if opts.Text == "" {
		opts.Text = DefaultText
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = 8 << 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	models := opts.Models
	if models == nil {
		models = KnownModels
	}
	g := &Gateway{
		opts:     opts,
		models:   make(map[string]bool, len(models)),
		accounts: make(map[string]*account),
		byID:     make(map[string]*account),
		closed:   make(chan struct{}),
	}
	for _, m := range models {
		g.models[m] = true
	}
	for _, c := range opts.Credentials {
		g.AddCredential(c)
	}
	return g
}

// Close releases every hanging or slow request; later ones hang no more.
// It does not stop a server serving the Gateway.
func (g *Gateway) Close() { g.closeOnce.Do(func() { close(g.closed) }) }

// AddCredential registers (or replaces, by email) a credential.
func (g *Gateway) AddCredential(c Credential) {
	if c.ID == "" {
		c.ID = c.Email
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if old, ok := g.accounts[c.Email]; ok {
		delete(g.byID, old.cred.ID)
	}
	if old, ok := g.byID[c.ID]; ok {
		delete(g.accounts, old.cred.Email)
	}
	a := &account{cred: c}
	g.accounts[c.Email] = a
	g.byID[c.ID] = a
}

// RemoveCredential forgets a credential: its requests get 401 from now on.
func (g *Gateway) RemoveCredential(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if a, ok := g.byID[id]; ok {
		delete(g.byID, id)
		delete(g.accounts, a.cred.Email)
	}
}

// account returns the credential's account; it panics for an unknown id
// (a bug in the test). g.mu must be held.
func (g *Gateway) account(id string) *account {
	a, ok := g.byID[id]
	if !ok {
		panic(fmt.Sprintf("fake: unknown credential %q", id))
	}
	return a
}

// SetBehavior sets the credential's permanent behaviour (used when its
// queue is empty, and by credits/check).
func (g *Gateway) SetBehavior(id string, b Behavior) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.account(id).cred.Default = b
}

// Push queues b for the credential's next n chat requests, after any
// behaviour queued before. Then the permanent behaviour applies again.
func (g *Gateway) Push(id string, n int, b Behavior) {
	if n <= 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	a := g.account(id)
	a.queue = append(a.queue, queued{b: b, n: n})
}

// ClearQueue drops the credential's queued behaviours.
func (g *Gateway) ClearQueue(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.account(id).queue = nil
}

// next takes the behaviour for a chat request. g.mu must be held.
func (a *account) next() Behavior {
	if len(a.queue) == 0 {
		return a.cred.Default
	}
	b := a.queue[0].b
	if a.queue[0].n--; a.queue[0].n == 0 {
		a.queue = a.queue[1:]
	}
	return b
}

// Requests returns every request received so far, in arrival order.
func (g *Gateway) Requests() []Request {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Request, len(g.requests))
	for i, r := range g.requests {
		out[i] = r.clone()
	}
	return out
}

// RequestsFor returns the requests authenticated as credential id.
func (g *Gateway) RequestsFor(id string) []Request {
	return slices.DeleteFunc(g.Requests(), func(r Request) bool { return r.CredentialID != id })
}

// LastRequest returns the latest request, if any.
func (g *Gateway) LastRequest() (Request, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.requests) == 0 {
		return Request{}, false
	}
	return g.requests[len(g.requests)-1].clone(), true
}

// Stats returns a credential's counters (zero for an unknown id).
func (g *Gateway) Stats(id string) Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	if a, ok := g.byID[id]; ok {
		return a.stats
	}
	return Stats{}
}

// MaxInFlight returns the most concurrent chat requests seen per credential.
func (g *Gateway) MaxInFlight() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]int, len(g.byID))
	for id, a := range g.byID {
		out[id] = a.stats.MaxInFlight
	}
	return out
}

// Reset clears recorded requests and counters (not credentials or behaviours).
func (g *Gateway) Reset() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dropped += len(g.requests)
	g.requests = nil
	for _, a := range g.byID {
		a.stats = Stats{InFlight: a.stats.InFlight, MaxInFlight: a.stats.InFlight}
	}
}

func (r Request) clone() Request {
	r.Header = r.Header.Clone()
	r.Body = slices.Clone(r.Body)
	return r
}
