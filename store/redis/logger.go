package redis

import (
	"context"
	"fmt"
	"log/slog"
)

// Logger routes the messages go-redis prints by itself (failed dials,
// pub/sub reconnections), which otherwise go to the standard error with
// the standard log package, to a slog.Logger at warning level:
//
//	goredis.SetLogger(redis.Logger{L: logger})
//
// go-redis has a single logger per process, which is why this is not an
// option of Open. Its messages name addresses, never passwords.
type Logger struct{ L *slog.Logger }

// Printf logs one go-redis message.
func (l Logger) Printf(ctx context.Context, format string, v ...any) {
	l.L.WarnContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}
