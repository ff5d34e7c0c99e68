# syntax=docker/dockerfile:1
#
# atlassian-proxy: static Go binary (pure-Go SQLite, CGO_ENABLED=0) on a small
# Alpine base. Alpine rather than distroless only so the HEALTHCHECK has a
# client (busybox wget); the binary itself needs nothing but CA certificates.
#
#   docker build -t atlassian-proxy --build-arg VERSION=$(git describe --tags --always) .

ARG GO_VERSION=1.26
ARG ALPINE_VERSION=3.22

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/atlassian-proxy ./cmd/atlassian-proxy

FROM alpine:${ALPINE_VERSION}
RUN apk add --no-cache ca-certificates \
 && addgroup -S -g 10001 atlassian-proxy \
 && adduser -S -D -H -u 10001 -G atlassian-proxy -s /sbin/nologin atlassian-proxy \
 && mkdir -p /data \
 && chown 10001:10001 /data \
 && chmod 0700 /data
COPY --from=build /out/atlassian-proxy /usr/local/bin/atlassian-proxy

# The store (/data/atlassian-proxy.db) and the generated key (/data/secret.key)
# live in DATA_DIR, which is the declared volume: never write state elsewhere.
ENV DATA_DIR=/data \
    PORT=8000 \
    METRICS_ADDR=:9090 \
    LOG_FORMAT=json
VOLUME /data
WORKDIR /data

# 8000: API and admin UI; 9090: Prometheus /metrics (keep it private).
EXPOSE 8000 9090

# Numeric so Kubernetes runAsNonRoot can verify it.
USER 10001:10001

# Liveness only (/health); readiness (/ready) is for load balancers.
# Shell form so a changed PORT is honoured.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD wget -q -O /dev/null "http://127.0.0.1:${PORT}/health" || exit 1

# SIGTERM drains: /ready turns 503, in-flight requests get SHUTDOWN_GRACE (25s).
# Give the container a longer stop timeout (docker stop -t 40 / stop_grace_period: SHUTDOWN_DELAY + SHUTDOWN_GRACE + 2 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/atlassian-proxy"]
CMD ["serve"]
