# One image for every fwdwatch process. The container's command picks the binary:
#   fwdwatch-enumerator | fwdwatch-scanner | fwdwatch-notifier | fwdwatch-actioner
#   fwdwatch (operator CLI) | m365-sim (Microsoft 365 simulator, demos and tests)
#
#   docker build -t fwdwatch:local .
#   docker run --rm fwdwatch:local fwdwatch --help
#
# Builds offline with BuildKit and with the classic builder alike: no `# syntax=` line
# (that would fetch a frontend image), no `RUN --mount`. So Debian's docker.io without
# buildx (which makes `docker compose` fall back to the classic builder) builds it too.
#
# Stages: planner (manifests + stub targets) → builder (dependencies in their own
# cached layer, then the workspace) → runtime (Debian slim, non-root).
#
# Base images: RUST_IMAGE and DEBIAN_IMAGE. Unset, the official images; where no image
# registry answers, deploy/local-images.sh builds stand-ins from Debian's packages and
# the compose file passes them in (docs/operations.md, "Hosts without a registry").

ARG RUST_IMAGE=rust:1.95-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS planner
WORKDIR /src
COPY . .
RUN mkdir /recipe && sh deploy/docker/cargo-stub-workspace /src /recipe

FROM ${RUST_IMAGE} AS builder
ARG BINARIES="fwdwatch-enumerator fwdwatch-scanner fwdwatch-notifier fwdwatch-actioner fwdwatch m365-sim"
# Symbols stay (readable panics and backtraces); debug info goes (a smaller image).
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
WORKDIR /src
# Dependencies only: this layer stays cached while only our own code changes.
COPY --from=planner /recipe/ ./
RUN set -eu; \
    set --; for b in ${BINARIES}; do set -- "$@" --bin "$b"; done; \
    cargo build --release --locked "$@"
COPY . .
# The real sources must look newer than the stubs just compiled, or Cargo would keep
# the stubs' build of our own crates. The workspace's build output is deleted in the
# same step: the layer kept for every code change holds the binaries, not gigabytes
# of target/ (the dependency layer above keeps what later builds reuse).
RUN set -eu; \
    find . -path ./target -prune -o -name '*.rs' -exec touch {} +; \
    set --; for b in ${BINARIES}; do set -- "$@" --bin "$b"; done; \
    cargo build --release --locked "$@"; \
    mkdir -p /out; \
    for b in ${BINARIES}; do cp "target/release/$b" /out/; done; \
    rm -rf target

FROM ${DEBIAN_IMAGE} AS runtime
# ca-certificates: TLS to Microsoft 365, Slack, Teams and webhooks. Nothing else:
# health checks use the bash-only probe below, so the image has no curl or wget.
# /var/lib/fwdwatch/secrets: mount point of the compose `secrets` volume; a new volume
# takes this directory's owner (uid 10001) and mode.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 fwdwatch \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin fwdwatch \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/fwdwatch/secrets
# Executable bits come from the repository (no `COPY --chmod`: BuildKit only).
COPY deploy/docker/fwdwatch-probe deploy/docker/fwdwatch-entrypoint deploy/docker/fwdwatch-setup /usr/local/bin/
COPY --from=builder /out/ /usr/local/bin/

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
# Loads compose's generated secrets and the demo's simulator settings, then runs the
# command. Kubernetes sets `command:`, which replaces it.
ENTRYPOINT ["/usr/local/bin/fwdwatch-entrypoint"]
CMD ["fwdwatch", "--help"]
