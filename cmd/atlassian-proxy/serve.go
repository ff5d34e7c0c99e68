package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/atlassian-proxy/atlassian-proxy/adminui"
	"github.com/atlassian-proxy/atlassian-proxy/api"
	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/dispatch"
	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/observability"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/store/sqlite"
)

const (
	dbFileName  = "atlassian-proxy.db"
	keyFileName = "secret.key"
)

// serve runs the server until ctx ends (SIGINT/SIGTERM), then drains.
func serve(ctx context.Context, e env, args []string) error {
	cfg, err := loadConfig("serve", args, e.getenv)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	logger, err := observability.NewLogger(e.stderr, observability.LogConfig{Level: cfg.LogLevel, Format: cfg.LogFormat})
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	ver := buildVersion()

	st, cipher, err := openStore(ctx, cfg.DataDir, cfg.SecretKey)
	if err != nil {
		return err
	}
	defer st.Close()

	catalog := gateway.DefaultCatalog()
	if cfg.ModelsFile != "" {
		f, err := os.Open(cfg.ModelsFile)
		if err != nil {
			return fmt.Errorf("%w: invalid MODELS_FILE: %w", errUsage, err)
		}
		catalog, err = gateway.LoadCatalog(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%w: invalid MODELS_FILE %s: %w", errUsage, cfg.ModelsFile, err)
		}
	}

	reg := observability.NewRegistry(ver)
	upstream, err := gateway.NewClient(gateway.Config{BaseURL: cfg.UpstreamURL, UserAgent: "atlassian-proxy/" + ver},
		&http.Client{Transport: gateway.NewTransport()})
	if err != nil {
		return err
	}
	tokens := auth.NewTokens(st, logger)
	p, err := pool.New(pool.Config{DefaultMaxConcurrency: cfg.MaxConcurrency},
		pool.Deps{Logger: logger, Registerer: reg, Checker: creditChecker{upstream}, States: st})
	if err != nil {
		return err
	}
	disp, err := dispatch.New(dispatch.Config{
		MaxAttempts:   cfg.MaxAttempts,
		RetryDeadline: cfg.RetryDeadline,
		QueueTimeout:  cfg.QueueTimeout,
		QueueMax:      cfg.QueueMax,
	}, p, dispatch.Deps{Logger: logger, Registerer: reg})
	if err != nil {
		return err
	}
	sync := newSyncer(st, cipher, tokens, p, logger)
	if err := sync.once(ctx); err != nil {
		return err
	}

	var draining atomic.Bool
	ready := func(ctx context.Context) error {
		if draining.Load() {
			return errors.New("shutting down")
		}
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return st.Ping(ctx)
	}
	apiServer, err := api.New(api.Config{MaxBodyBytes: cfg.MaxBodyBytes, StreamKeepAlive: cfg.StreamKeepAlive}, api.Deps{
		Logger: logger, Registerer: reg, Tokens: tokens, Catalog: catalog,
		Upstream: upstream, Dispatcher: disp, Ready: ready,
	})
	if err != nil {
		return err
	}
	admin, err := adminui.New(adminui.Config{SecureCookies: cfg.SecureCookies}, adminui.Deps{
		Store: st, Cipher: cipher, Pool: p, Logger: logger, Changed: sync.changed,
	})
	if err != nil {
		return err
	}
	defer admin.Close()
	generated, err := admin.Service().EnsureAdminPassword(ctx, cfg.AdminPassword)
	if err != nil {
		return fmt.Errorf("set up the admin password: %w", err)
	}
	if generated != "" {
		printGeneratedPassword(e.stdout, generated)
	}
	mux := http.NewServeMux()
	mux.Handle("/admin/", http.StripPrefix("/admin", admin.Handler()))
	mux.Handle("/", apiServer.Handler())

	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s (PORT): %w", addr, err)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	logger.Info("listening", "addr", ln.Addr().String(), "version", ver, "data_dir", cfg.DataDir,
		"upstream", cfg.UpstreamURL, "models", len(catalog.List()))

	// The pool, the token cache and the syncer outlive the signal: they keep
	// serving in-flight requests while the HTTP server drains.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return p.Run(gctx) })
	g.Go(func() error { return tokens.Run(gctx) })
	g.Go(func() error { return sync.run(gctx) })
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		select {
		case <-ctx.Done():
			logger.Info("shutting down", "grace", cfg.ShutdownGrace.String())
		case <-gctx.Done():
		}
		draining.Store(true)
		shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownGrace)
		defer cancel()
		if err := srv.Shutdown(shutCtx); err != nil {
			logger.Warn("grace period over; closing remaining connections", "err", err)
			srv.Close()
		}
		stopRun()
		return nil
	})
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	logger.Info("stopped")
	return nil
}

// openStore opens the embedded store in dataDir and the cipher of stored
// secrets: SECRET_KEY when given, else a key generated into dataDir once.
func openStore(ctx context.Context, dataDir, secretKey string) (*sqlite.Store, *auth.Cipher, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create DATA_DIR %s: %w", dataDir, err)
	}
	var key []byte
	var err error
	if secretKey != "" {
		if key, err = auth.ParseKey(secretKey); err != nil {
			return nil, nil, fmt.Errorf("%w: invalid SECRET_KEY: %w", errUsage, err)
		}
	} else if key, err = auth.LoadOrCreateKeyFile(filepath.Join(dataDir, keyFileName)); err != nil {
		return nil, nil, fmt.Errorf("secret key in DATA_DIR: %w", err)
	}
	cipher, err := auth.NewCipher(key)
	if err != nil {
		return nil, nil, err
	}
	st, err := sqlite.Open(ctx, filepath.Join(dataDir, dbFileName))
	if err != nil {
		return nil, nil, fmt.Errorf("open the store in DATA_DIR %s: %w", dataDir, err)
	}
	return st, cipher, nil
}

func printGeneratedPassword(w interface{ Write([]byte) (int, error) }, pw string) {
	fmt.Fprintf(w, "\n"+
		"  ================================================================\n"+
		"  Generated admin password (shown once; change it at first login):\n"+
		"      %s\n"+
		"  Log in at /admin. Lost it? Run: atlassian-proxy reset-password\n"+
		"  ================================================================\n\n", pw)
}

// creditChecker lets the pool re-check an invalid or refused credential in
// the background through the gateway's credits/check route.
type creditChecker struct{ c *gateway.Client }

func (k creditChecker) Check(ctx context.Context, cred pool.Credential) (pool.Outcome, error) {
	_, err := k.c.CheckCredits(ctx, cred)
	if err == nil {
		return pool.OutcomeSuccess, nil
	}
	var ge *gateway.Error
	if errors.As(err, &ge) {
		return ge.Outcome(), err
	}
	return pool.OutcomeTransport, err
}
