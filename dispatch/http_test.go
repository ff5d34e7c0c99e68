package dispatch

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// upstream is a loopback HTTP server standing in for the gateway: each
// credential (by its Basic-auth email) answers with a status of its own and
// the server records the peak concurrency per credential.
type upstream struct {
	*httptest.Server
	delay time.Duration

	mu       sync.Mutex
	status   map[string]int // email → status; 200 when absent
	inFlight map[string]int
	peak     map[string]int
	calls    map[string]int
}

func newUpstream(t *testing.T, delay time.Duration) *upstream {
	u := &upstream{delay: delay, status: map[string]int{}, inFlight: map[string]int{}, peak: map[string]int{}, calls: map[string]int{}}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	email, _, ok := r.BasicAuth()
	if !ok {
		http.Error(w, "no auth", http.StatusUnauthorized)
		return
	}
	u.mu.Lock()
	u.calls[email]++
	u.inFlight[email]++
	u.peak[email] = max(u.peak[email], u.inFlight[email])
	status := u.status[email]
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		u.inFlight[email]--
		u.mu.Unlock()
	}()
	time.Sleep(u.delay)
	switch status {
	case 0, http.StatusOK:
		_, _ = io.WriteString(w, `{"ok":true}`)
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "7")
		http.Error(w, `{"status":"MINUTE_LIMIT_EXCEEDED"}`, status)
	default:
		http.Error(w, "failed", status)
	}
}

// call makes one upstream attempt and classifies the answer the way the
// gateway package does.
func (u *upstream) call(client *http.Client) Call {
	return func(ctx context.Context, cred pool.Credential) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.URL, nil)
		if err != nil {
			return err
		}
		req.SetBasicAuth(cred.Email, cred.Token)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		switch s := resp.StatusCode; {
		case s == http.StatusOK:
			return nil
		case s == http.StatusTooManyRequests:
			secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			return &upErr{pool.OutcomeRateLimited, time.Duration(secs) * time.Second}
		case s == http.StatusUnauthorized:
			return fail(pool.OutcomeUnauthorized)
		case s == http.StatusForbidden:
			return fail(pool.OutcomeForbidden)
		case s >= 500:
			return fail(pool.OutcomeServerError)
		default:
			return fail(pool.OutcomeClientError)
		}
	}
}

func TestThousandConcurrentOverTwentyCredentials(t *testing.T) {
	u := newUpstream(t, 2*time.Millisecond)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	t.Cleanup(client.CloseIdleConnections)
	creds := specs(20, 4)
	e := newEnv(t, creds, Config{}, Deps{})
	call := u.call(client)

	var mu sync.Mutex
	leased, peak := map[string]int{}, map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for range 1000 {
		wg.Go(func() {
			l, err := e.d.Do(context.Background(), call)
			if err != nil {
				errs <- err
				return
			}
			id := l.Credential().ID
			mu.Lock()
			leased[id]++
			peak[id] = max(peak[id], leased[id])
			mu.Unlock()
			time.Sleep(time.Millisecond) // the rest of the response
			mu.Lock()
			leased[id]--
			mu.Unlock()
			l.Done(pool.OutcomeSuccess, pool.Usage{InputTokens: 1})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("request failed: %v", err)
	}
	for _, c := range creds {
		if p := u.peak[c.Email]; p > 4 {
			t.Errorf("%s: the upstream saw %d concurrent requests, limit 4", c.ID, p)
		}
		if p := peak[c.ID]; p > 4 || p == 0 {
			t.Errorf("%s: %d concurrent leases, want 1..4", c.ID, p)
		}
	}
	if tot := e.p.Status().Totals; tot.Requests != 1000 || tot.InputTokens != 1000 || tot.InFlight != 0 {
		t.Errorf("totals: got %+v, want 1000 requests and none in flight", tot)
	}
}

func TestFailoverOverHTTP(t *testing.T) {
	u := newUpstream(t, 0)
	creds := specs(4, 4)
	u.status[creds[0].Email] = http.StatusTooManyRequests
	u.status[creds[1].Email] = http.StatusUnauthorized
	u.status[creds[2].Email] = http.StatusBadGateway
	e := newEnv(t, creds, Config{BackoffBase: time.Millisecond}, Deps{})
	call := u.call(http.DefaultClient)

	l, err := e.d.Do(context.Background(), call)
	if err != nil {
		t.Fatal(err)
	}
	if l.Credential().ID != "c03" || l.Attempts() != 4 {
		t.Errorf("got %s after %d attempts, want c03 after 4", l.Credential().ID, l.Attempts())
	}
	l.Done(pool.OutcomeSuccess, pool.Usage{})
	for id, want := range map[string]string{"c00": pool.StateCooling, "c01": pool.StateInvalid, "c03": pool.StateReady} {
		if st := e.status(t, id); st.State != want {
			t.Errorf("%s: got %s, want %s", id, st.State, want)
		}
	}
	if st := e.status(t, "c00"); st.Reason != "rate_limited" || time.Until(st.CooldownUntil) < 6*time.Second {
		t.Errorf("c00: got %+v, want a 7 s rate-limit cooldown from Retry-After", st)
	}
	// A client error: straight back, no penalty, no other credential tried.
	u.status[creds[3].Email] = http.StatusBadRequest
	before := u.calls[creds[3].Email]
	if _, err := e.d.Do(context.Background(), call); Classify(context.Background(), err) != pool.OutcomeClientError {
		t.Errorf("got %v, want the client error", err)
	}
	if st := e.status(t, "c03"); st.State != pool.StateReady || st.Failures != 0 || u.calls[creds[3].Email] != before+1 {
		t.Errorf("c03: got %+v", st)
	}
	// A dead upstream: transport errors on every credential.
	u.Close()
	_, err = e.d.Do(context.Background(), call)
	var de *Error
	if !errors.As(err, &de) || (de.Kind != UpstreamFailed && de.Kind != AllRateLimited && de.Kind != AllCooling) {
		t.Errorf("got %v, want the upstream to have failed", err)
	}
}

func TestWaitersFailFastWhenTheirCredentialGoes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		creds := specs(1, 1)
		e := newEnv(t, creds, Config{}, Deps{})
		synctest.Wait()
		h, err := e.d.Do(t.Context(), (&script{}).call)
		if err != nil {
			t.Fatal(err)
		}
		result := make(chan error, 1)
		go func() {
			_, err := e.d.Do(t.Context(), (&script{}).call)
			result <- err
		}()
		synctest.Wait()
		// The operator disables the only credential while a request waits for it.
		creds[0].Enabled = false
		e.p.Sync(creds, nil)
		err = <-result
		var de *Error
		if !errors.As(err, &de) || de.Kind != NoCredentials {
			t.Errorf("got %v, want NoCredentials at once", err)
		}
		h.Done(pool.OutcomeSuccess, pool.Usage{})
	})
}
