package adminui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sethvargo/go-limiter"

	"github.com/atlassian-proxy/atlassian-proxy/internal/logtest"
	"github.com/atlassian-proxy/atlassian-proxy/ratelimit"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// TestTokenFormResubmission: the create form is good for one token. The
// browser sending it again (reload of the answer, "confirm resubmission")
// makes no second token that nobody sees: 409, the list, a clear notice.
func TestTokenFormResubmission(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.pageLoggedIn(testPassword)

	nonce := formNonce(t, c.do("GET", "/tokens", nil, nil))
	vals := url.Values{"name": {"ci"}, nonceField: {nonce}}
	first := wantPage(t, c.post("/tokens", vals), http.StatusCreated, `New API token “ci”`)
	if next := formNonce(t, response{body: []byte(first)}); next == nonce || !validNonce(next) {
		t.Errorf("the answer's form reuses the nonce or has a bad one: %q", next)
	}
	again := wantPage(t, c.post("/tokens", vals), http.StatusConflict,
		"This form was sent already", "no second token was made", "if you did not copy it, revoke it and create another.")
	if newTokenInput.MatchString(again) {
		t.Error("the resubmission shows a token")
	}
	if !strings.Contains(again, `data-token="ci"`) {
		t.Error("the resubmission's answer does not list the token made the first time")
	}
	if n := e.tokenCount(t); n != 1 {
		t.Fatalf("%d tokens after a resubmission, want 1", n)
	}

	t.Run("no or a malformed nonce", func(t *testing.T) {
		for _, n := range []string{"", "abc", strings.Repeat("a", 26), strings.Repeat("A", 25) + "!"} {
			body := wantPage(t, c.post("/tokens", url.Values{"name": {"other"}, nonceField: {n}}), http.StatusBadRequest, "This form is out of date")
			wantValue(t, body, "name", "other")
		}
		if n := e.tokenCount(t); n != 1 {
			t.Errorf("%d tokens, want 1", n)
		}
	})
	t.Run("a form with mistakes keeps its nonce", func(t *testing.T) {
		nonce := formNonce(t, c.do("GET", "/tokens", nil, nil))
		wantPage(t, c.post("/tokens", url.Values{"name": {""}, nonceField: {nonce}}), http.StatusBadRequest, "Name is required")
		wantPage(t, c.post("/tokens", url.Values{"name": {"fixed"}, nonceField: {nonce}}), http.StatusCreated, `New API token “fixed”`)
		if n := e.tokenCount(t); n != 2 {
			t.Errorf("%d tokens, want 2", n)
		}
	})
	t.Run("sent twice at once", func(t *testing.T) {
		nonce := formNonce(t, c.do("GET", "/tokens", nil, nil))
		body := url.Values{"name": {"double"}, nonceField: {nonce}, csrfField: {c.csrf}}.Encode()
		var created, refused atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				status, err := rawPost(c, "/tokens", body)
				switch {
				case err != nil:
					errs <- err
				case status == http.StatusCreated:
					created.Add(1)
				case status == http.StatusConflict:
					refused.Add(1)
				default:
					errs <- errors.New("status " + http.StatusText(status))
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if created.Load() != 1 || refused.Load() != 7 {
			t.Errorf("%d created, %d refused; want 1 and 7", created.Load(), refused.Load())
		}
		if n := e.tokenCount(t); n != 3 {
			t.Errorf("%d tokens, want 3", n)
		}
	})
}

// rawPost sends a form with c's cookies from any goroutine (c.do is for
// the test's own) and returns the status.
func rawPost(c *client, path, body string) (int, error) {
	req, err := http.NewRequestWithContext(context.Background(), "POST", c.e.srv.URL+"/admin"+path, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", formType)
	for name, value := range c.cookies {
		req.AddCookie(&http.Cookie{Name: name, Value: value})
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	_, err = io.Copy(io.Discard, res.Body)
	return res.StatusCode, err
}

// failingTakes is a real in-process limiter store whose Take fails while
// down is set, as a shared store does when Redis is away and no fallback
// answers.
type failingTakes struct {
	limiter.Store
	down      atomic.Bool
	burstDown atomic.Bool // Burst only
}

func (f *failingTakes) Burst(ctx context.Context, key string, tokens uint64) error {
	if f.down.Load() || f.burstDown.Load() {
		return errors.New("redis: connection refused")
	}
	return f.Store.Burst(ctx, key, tokens)
}

func (f *failingTakes) Take(ctx context.Context, key string) (uint64, uint64, uint64, bool, error) {
	if f.down.Load() {
		return 0, 0, 0, false, errors.New("redis: connection refused")
	}
	return f.Store.Take(ctx, key)
}

// TestTokenFormNonceStoreDown: when the store of used nonces fails, no
// token is made (it could not be told from a resubmission): 503, nothing
// stored; once it is back, the same form works. The store is Deps.Nonces,
// never one of Deps.Limiters (whose shared stores may fall back to a
// per-process copy, which would make a repeat on another replica look new).
func TestTokenFormNonceStoreDown(t *testing.T) {
	t.Parallel()
	var nonces *failingTakes
	var window time.Duration
	var limiterNames []string
	e := newEnv(t, envOptions{
		limiters: func(name string, tokens int, w time.Duration) (limiter.Store, error) {
			limiterNames = append(limiterNames, name)
			return ratelimit.Memory(uint64(tokens), w)
		},
		nonces: func(w time.Duration) (limiter.Store, error) {
			s, err := ratelimit.Memory(1, w)
			if err != nil {
				return nil, err
			}
			window = w
			nonces = &failingTakes{Store: s}
			return nonces, nil
		},
	})
	if window != DefaultSessionAbsolute {
		t.Errorf("nonces are remembered for %s, want the longest session (%s)", window, DefaultSessionAbsolute)
	}
	if !slices.Equal(limiterNames, []string{"ip", "total"}) {
		t.Errorf("Deps.Limiters made %q, want only the login limiters ip and total", limiterNames)
	}
	c := e.pageLoggedIn(testPassword)
	nonce := formNonce(t, c.do("GET", "/tokens", nil, nil))
	nonces.down.Store(true)
	wantPage(t, c.post("/tokens", url.Values{"name": {"ci"}, nonceField: {nonce}}), http.StatusServiceUnavailable,
		"Creating tokens is unavailable right now")
	if ts, _ := e.st.ListTokens(t.Context()); len(ts) != 0 {
		t.Fatalf("a token was made without its nonce being checked: %v", ts)
	}
	nonces.down.Store(false)
	wantPage(t, c.post("/tokens", url.Values{"name": {"ci"}, nonceField: {nonce}}), http.StatusCreated, `New API token “ci”`)
}

// TestTokenFormStoreDown: a create that fails in the store made no token,
// so its nonce is given back: sending the same form again (a reload once
// the store is back) makes the token instead of being taken for a repeat.
func TestTokenFormStoreDown(t *testing.T) {
	t.Parallel()
	var u *unavailableStore
	e := newEnv(t, envOptions{wrapStore: func(s store.Store) store.Store { u = &unavailableStore{Store: s}; return u }})
	c := e.pageLoggedIn(testPassword)
	vals := url.Values{"name": {"ci"}, nonceField: {formNonce(t, c.do("GET", "/tokens", nil, nil))}}
	u.tokenDown.Store(true)
	wantPage(t, c.post("/tokens", vals), http.StatusServiceUnavailable, "The store cannot be reached right now")
	u.tokenDown.Store(false)
	wantPage(t, c.post("/tokens", vals), http.StatusCreated, `New API token “ci”`)
	wantPage(t, c.post("/tokens", vals), http.StatusConflict, "This form was sent already")
	if ts, _ := e.st.ListTokens(t.Context()); len(ts) != 1 {
		t.Errorf("%d tokens, want 1", len(ts))
	}
}

// TestTokenFormNonceNotGivenBack: when the nonce cannot be given back
// after a failed create, the failure is logged (without the nonce) and the
// form, sent again, is refused as a repeat: the page then says so, and the
// list shows that no token was made.
func TestTokenFormNonceNotGivenBack(t *testing.T) {
	t.Parallel()
	var u *unavailableStore
	var nonces *failingTakes
	logs := &logtest.Buffer{}
	e := newEnv(t, envOptions{
		wrapStore: func(s store.Store) store.Store { u = &unavailableStore{Store: s}; return u },
		logger:    slog.New(slog.NewJSONHandler(logs, nil)),
		nonces: func(w time.Duration) (limiter.Store, error) {
			s, err := ratelimit.Memory(1, w)
			if err != nil {
				return nil, err
			}
			nonces = &failingTakes{Store: s}
			return nonces, nil
		},
	})
	c := e.pageLoggedIn(testPassword)
	nonce := formNonce(t, c.do("GET", "/tokens", nil, nil))
	vals := url.Values{"name": {"ci"}, nonceField: {nonce}}
	u.tokenDown.Store(true)
	nonces.burstDown.Store(true)
	wantPage(t, c.post("/tokens", vals), http.StatusServiceUnavailable, "The store cannot be reached right now")
	recs := logs.Messages(t, "token form nonce: give back")
	if len(recs) != 1 || !strings.Contains(fmt.Sprint(recs[0]["error"]), "connection refused") {
		t.Errorf("give-back failure logged as %v", recs)
	}
	if strings.Contains(logs.String(), nonce) || strings.Contains(logs.String(), c.csrf) {
		t.Error("the log holds the nonce or the CSRF token")
	}
	u.tokenDown.Store(false)
	nonces.burstDown.Store(false)
	wantPage(t, c.post("/tokens", vals), http.StatusConflict, "This form was sent already")
	if ts, _ := e.st.ListTokens(t.Context()); len(ts) != 0 {
		t.Errorf("%d tokens, want 0", len(ts))
	}
}
