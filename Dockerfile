# syntax=docker/dockerfile:1
#
# azgate's container image: the release binary on distroless, running as a
# non-root user, with nothing to write on its root filesystem.
#
#   docker build -t azgate:local .
#   docker run --rm --read-only -p 127.0.0.1:8080:8080 -e AZGATE_API_KEY="$(openssl rand -hex 24)" azgate:local
#
# The image's config is deploy/docker/proxy.toml (see there for the inbound controls
# that allow 0.0.0.0). Mount your own directory on /etc/azgate to replace it.

ARG RUST_VERSION=1.95

# Debian 12 (bookworm) to build, so the binary links against the glibc of the runtime.
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The registry and target caches survive between builds (BuildKit); the binary is copied
# out of the cached target in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin azgate \
    && install -D -m 0755 target/release/azgate /out/azgate

# distroless/cc: glibc, libgcc, CA certificates (the token clients verify against the
# system roots) and a `nonroot` user (65532); no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/azgate /usr/local/bin/azgate
COPY deploy/docker/proxy.toml /etc/azgate/proxy.toml
USER 65532:65532
# 8080: the proxy; 9090: /healthz /readyz /metrics /status.
EXPOSE 8080 9090
# Exec form: no shell in the image. Follows the admin port of deploy/docker/proxy.toml;
# override the health check when you move it (AZGATE_ADMIN_PORT).
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/azgate", "health", "--timeout", "3s", "http://127.0.0.1:9090/healthz"]
# SIGTERM (docker stop, Kubernetes) drains: /readyz turns 503, in-flight requests finish.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/azgate"]
CMD ["serve", "-c", "/etc/azgate/proxy.toml"]
