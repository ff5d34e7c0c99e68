package adminui

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sethvargo/go-limiter"

	"github.com/atlassian-proxy/atlassian-proxy/ratelimit"
)

// closeCounted is a real in-process limiter store that counts its Close calls.
type closeCounted struct {
	limiter.Store
	closed int
}

func (c *closeCounted) Close(ctx context.Context) error {
	c.closed++
	return c.Store.Close(ctx)
}

// TestNewLimitersFail: a login throttling store (or the token form's nonce
// store) that cannot be made fails New, and those made before it are
// closed (their sweepers stop).
func TestNewLimitersFail(t *testing.T) {
	t.Parallel()
	st, c := openStoreCipher(t)
	errDown := errors.New("redis: connection refused")
	for _, failing := range []string{"ip", "total", "nonces"} {
		t.Run(failing, func(t *testing.T) {
			var made []*closeCounted
			mk := func(name string, tokens int, window time.Duration) (limiter.Store, error) {
				if name == failing {
					return nil, errDown
				}
				s, err := ratelimit.Memory(uint64(tokens), window)
				if err != nil {
					return nil, err
				}
				cc := &closeCounted{Store: s}
				made = append(made, cc)
				return cc, nil
			}
			nonces := func(window time.Duration) (limiter.Store, error) { return mk("nonces", 1, window) }
			a, err := New(Config{}, Deps{Store: st, Cipher: c, Limiters: mk, Nonces: nonces})
			if !errors.Is(err, errDown) || a != nil {
				t.Fatalf("New = %v, %v; want nil and the limiter's error", a, err)
			}
			for _, s := range made {
				if s.closed != 1 {
					t.Errorf("a limiter made before the failure was closed %d times, want 1", s.closed)
				}
			}
		})
	}
}
