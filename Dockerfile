# syntax=docker/dockerfile:1.7
#
# One image for every fwdwatch process. The container's command picks the binary:
#   fwdwatch-enumerator | fwdwatch-scanner | fwdwatch-notifier | fwdwatch-actioner
#   fwdwatch (operator CLI) | m365-sim (Microsoft 365 simulator, demos and tests)
#
#   docker build -t fwdwatch:local .
#   docker run --rm fwdwatch:local fwdwatch --help
#
# Stages: chef (cargo-chef) → planner (dependency recipe) → builder (dependencies in
# their own cached layer, then the workspace) → runtime (debian slim, non-root).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# The recipe lists the workspace's manifests and lockfile only, so the next stage's
# dependency layer is rebuilt only when Cargo.toml / Cargo.lock change.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG BINARIES="fwdwatch-enumerator fwdwatch-scanner fwdwatch-notifier fwdwatch-actioner fwdwatch m365-sim"
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer stays cached while only our own code changes.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    set -eu; \
    set --; for b in ${BINARIES}; do set -- "$@" --bin "$b"; done; \
    cargo build --release --locked "$@"; \
    mkdir -p /out; \
    for b in ${BINARIES}; do cp "target/release/$b" /out/; done

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: TLS to Microsoft 365, Slack, Teams and webhooks. Nothing else:
# health checks use the bash-only probe below, so the image has no curl or wget.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 fwdwatch \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin fwdwatch
COPY --from=builder /out/ /usr/local/bin/
COPY --chmod=0755 deploy/docker/fwdwatch-probe /usr/local/bin/fwdwatch-probe

LABEL org.opencontainers.image.title="fwdwatch" \
      org.opencontainers.image.description="External mail-forward watch for Microsoft 365 tenants" \
      org.opencontainers.image.licenses="Apache-2.0"

# Numeric user, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
WORKDIR /tmp
# Containers log JSON to stderr; the config file (if any) comes from FWDWATCH_CONFIG.
ENV FWDWATCH__TELEMETRY__LOG_FORMAT=json
# 8080: actioner HTTP; 9464: /metrics and /healthz of every service (telemetry.metrics_listen);
# 8365: m365-sim.
EXPOSE 8080 9464 8365
STOPSIGNAL SIGTERM
CMD ["fwdwatch", "--help"]
