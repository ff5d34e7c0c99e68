package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/adminui"
	redisstore "github.com/atlassian-proxy/atlassian-proxy/store/redis"
)

// config is everything the server reads from its environment and flags.
// Flags win over environment variables, which win over defaults. This is
// the only place where configuration is parsed.
type config struct {
	Port            int
	Host            string
	DataDir         string
	UpstreamURL     string
	AdminPassword   string
	SecretKey       string
	LogLevel        string
	LogFormat       string
	ModelsFile      string
	MaxBodyBytes    int64
	MaxAttempts     int
	RetryDeadline   time.Duration
	QueueTimeout    time.Duration
	QueueMax        int
	StreamKeepAlive time.Duration
	MaxConcurrency  int
	ShutdownGrace   time.Duration
	SecureCookies   bool
	MetricsAddr     string
	ShutdownDelay   time.Duration
	RedisURL        string
	RedisPassword   string
	RedisPrefix     string
	TrustedProxies  []netip.Prefix
}

// setting describes one configuration variable: its environment name, its
// flag name, its default and how to parse it into the config.
type setting struct {
	env, flag, def, help string
	secret               bool
	emptyAllowed         bool // an explicitly empty value is a value (METRICS_ADDR="" disables), not "unset"
	set                  func(c *config, v string) error
}

func settings() []setting {
	return []setting{
		{env: "PORT", flag: "port", def: "8000", help: "TCP port of the HTTP server",
			set: func(c *config, v string) error { return parsePort(v, &c.Port) }},
		{env: "HOST", flag: "host", def: "", help: "interface to listen on (empty: all)",
			set: func(c *config, v string) error { c.Host = v; return nil }},
		{env: "DATA_DIR", flag: "data-dir", def: "./data", help: "directory of the embedded store and the generated secret key",
			set: func(c *config, v string) error { return nonEmpty(v, &c.DataDir) }},
		{env: "UPSTREAM_URL", flag: "upstream-url", def: "https://api.atlassian.com", help: "base URL of the Atlassian API; gateway paths are appended",
			set: func(c *config, v string) error { return parseURL(v, &c.UpstreamURL) }},
		{env: "ADMIN_PASSWORD", flag: "admin-password", def: "", secret: true, help: "admin password (default: generated at first start and printed once)",
			set: func(c *config, v string) error { return parsePassword(v, &c.AdminPassword) }},
		{env: "SECRET_KEY", flag: "secret-key", def: "", secret: true, help: "32-byte base64 key that encrypts stored tokens (default: generated into DATA_DIR)",
			set: func(c *config, v string) error { c.SecretKey = v; return nil }},
		{env: "LOG_LEVEL", flag: "log-level", def: "info", help: "debug, info, warn or error",
			set: func(c *config, v string) error {
				return oneOf(v, &c.LogLevel, "debug", "info", "warn", "error")
			}},
		{env: "LOG_FORMAT", flag: "log-format", def: "json", help: "json or text",
			set: func(c *config, v string) error { return oneOf(v, &c.LogFormat, "json", "text") }},
		{env: "MODELS_FILE", flag: "models-file", def: "", help: "JSON file replacing the built-in model catalog",
			set: func(c *config, v string) error { c.ModelsFile = v; return nil }},
		{env: "MAX_BODY_BYTES", flag: "max-body-bytes", def: "10485760", help: "largest accepted request body",
			set: func(c *config, v string) error { return parsePositive64(v, &c.MaxBodyBytes) }},
		{env: "MAX_ATTEMPTS", flag: "max-attempts", def: "5", help: "credentials tried per request at most",
			set: func(c *config, v string) error { return parsePositive(v, &c.MaxAttempts) }},
		{env: "RETRY_DEADLINE", flag: "retry-deadline", def: "60s", help: "time a request may spend finding a credential",
			set: func(c *config, v string) error { return parseDuration(v, &c.RetryDeadline) }},
		{env: "QUEUE_TIMEOUT", flag: "queue-timeout", def: "30s", help: "longest wait for a free credential slot",
			set: func(c *config, v string) error { return parseDuration(v, &c.QueueTimeout) }},
		{env: "QUEUE_MAX", flag: "queue-max", def: "1000", help: "requests that may wait for a free slot at once",
			set: func(c *config, v string) error { return parsePositive(v, &c.QueueMax) }},
		{env: "STREAM_KEEPALIVE", flag: "stream-keepalive", def: "15s", help: "interval of SSE keep-alive comments while the upstream is silent",
			set: func(c *config, v string) error { return parseDuration(v, &c.StreamKeepAlive) }},
		{env: "MAX_CONCURRENCY", flag: "max-concurrency", def: "4", help: "default in-flight requests per credential",
			set: func(c *config, v string) error { return parsePositive(v, &c.MaxConcurrency) }},
		{env: "SHUTDOWN_GRACE", flag: "shutdown-grace", def: "25s", help: "time in-flight requests get to finish on shutdown",
			set: func(c *config, v string) error { return parseDuration(v, &c.ShutdownGrace) }},
		{env: "SHUTDOWN_DELAY", flag: "shutdown-delay", def: "5s",
			help: "after SIGTERM, how long new connections are still accepted while /ready already answers 503 (0s: none)",
			set:  func(c *config, v string) error { return parseNonNegativeDuration(v, &c.ShutdownDelay) }},
		{env: "REDIS_URL", flag: "redis-url", def: "", secret: true,
			help: "redis:// or rediss:// URL of a Redis shared by several replicas (default: the embedded store in DATA_DIR)",
			set:  func(c *config, v string) error { return parseRedisURL(v, &c.RedisURL) }},
		{env: "REDIS_PASSWORD", flag: "redis-password", def: "", secret: true, help: "Redis password (overrides one in REDIS_URL)",
			set: func(c *config, v string) error { c.RedisPassword = v; return nil }},
		{env: "REDIS_PREFIX", flag: "redis-prefix", def: redisstore.DefaultPrefix, help: "prefix of every Redis key, so deployments can share a Redis",
			set: func(c *config, v string) error { return nonEmpty(v, &c.RedisPrefix) }},
		{env: "TRUSTED_PROXIES", flag: "trusted-proxies", def: "",
			help: "comma-separated IPs or CIDRs of load balancers whose X-Forwarded-For gives the client IP",
			set:  func(c *config, v string) error { return parsePrefixes(v, &c.TrustedProxies) }},
		{env: "METRICS_ADDR", flag: "metrics-addr", def: ":9090", emptyAllowed: true,
			help: "listener of the Prometheus /metrics endpoint, apart from the public port (empty: disabled)",
			set:  func(c *config, v string) error { return parseAddr(v, &c.MetricsAddr) }},
		{env: "SECURE_COOKIES", flag: "secure-cookies", def: "false", help: "mark admin cookies Secure (set when served over TLS)",
			set: func(c *config, v string) error { return parseBool(v, &c.SecureCookies) }},
	}
}

// loadConfig parses args (without the program and subcommand names) and the
// environment. A bad value is an error naming the variable (and flag).
func loadConfig(name string, args []string, lookupEnv func(string) (string, bool)) (config, error) {
	var c config
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	all := settings()
	flags := make([]*string, len(all))
	for i, s := range all {
		def := s.def
		if s.secret {
			def = ""
		}
		flags[i] = fs.String(s.flag, "", fmt.Sprintf("%s (env %s, default %q)", s.help, s.env, def))
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for i, s := range all {
		v, from := s.def, ""
		if e, ok := lookupEnv(s.env); ok && (e != "" || s.emptyAllowed) {
			v, from = e, s.env
		}
		if given[s.flag] {
			v, from = *flags[i], "--"+s.flag
		}
		if err := s.set(&c, strings.TrimSpace(v)); err != nil {
			if from == "" {
				from = s.env
			}
			return c, fmt.Errorf("invalid %s: %w", from, err)
		}
	}
	if c.RedisURL != "" && c.SecretKey == "" {
		return c, errors.New("SECRET_KEY is required when REDIS_URL is set: every replica must encrypt and decrypt " +
			"the shared credentials with the same key (generate one with: openssl rand -base64 32)")
	}
	return c, nil
}

func parseNonNegativeDuration(v string, dst *time.Duration) error {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("%q is not a duration such as 5s (0s for none)", v)
	}
	*dst = d
	return nil
}

// parseRedisURL checks the shape of a Redis URL. Its messages never repeat
// the value: it may hold a password.
func parseRedisURL(v string, dst *string) error {
	if v == "" {
		*dst = ""
		return nil
	}
	u, err := url.Parse(v)
	if err != nil {
		return errors.New("not a URL; expected redis://[:password@]host:6379/0 or rediss://…")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return errors.New("the scheme must be redis:// or rediss:// (TLS)")
	}
	if u.Host == "" {
		return errors.New("the URL names no host; expected redis://host:6379/0")
	}
	*dst = v
	return nil
}

// parsePrefixes reads comma-separated IP addresses and CIDR prefixes.
func parsePrefixes(v string, dst *[]netip.Prefix) error {
	var out []netip.Prefix
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return fmt.Errorf("%q is not an IP address or CIDR such as 10.0.0.0/8", f)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	*dst = out
	return nil
}

func parsePort(v string, dst *int) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q is not a port number (0-65535)", v)
	}
	*dst = n
	return nil
}

func parsePositive(v string, dst *int) error {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return fmt.Errorf("%q is not a positive integer", v)
	}
	*dst = n
	return nil
}

func parsePositive64(v string, dst *int64) error {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("%q is not a positive integer", v)
	}
	*dst = n
	return nil
}

func parseDuration(v string, dst *time.Duration) error {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return fmt.Errorf("%q is not a positive duration such as 30s or 2m", v)
	}
	*dst = d
	return nil
}

func parseBool(v string, dst *bool) error {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("%q is not true or false", v)
	}
	*dst = b
	return nil
}

func parseURL(v string, dst *string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", v)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return errors.New("the URL must not carry a query or fragment")
	}
	*dst = strings.TrimRight(v, "/")
	return nil
}

func parsePassword(v string, dst *string) error {
	if v != "" {
		// The admin UI's own rules, so that a password accepted here is
		// accepted at start-up, and the reverse.
		var ve *adminui.ValidationError
		if err := adminui.ValidatePassword(v); errors.As(err, &ve) {
			return errors.New(ve.Message)
		} else if err != nil {
			return err
		}
	}
	*dst = v
	return nil
}

func parseAddr(v string, dst *string) error {
	if v != "" {
		if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
			return fmt.Errorf("%q is not a host:port listen address such as :9090", v)
		}
	}
	*dst = v
	return nil
}

func nonEmpty(v string, dst *string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	*dst = v
	return nil
}

func oneOf(v string, dst *string, allowed ...string) error {
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			*dst = a
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
}
