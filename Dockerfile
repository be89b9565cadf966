# syntax=docker/dockerfile:1
# haul in a container. Build: docker build -t haul .
# Run:  docker run -p 7070:7070 -e HAUL_API_TOKEN=$(openssl rand -hex 24) \
#         -v haul-data:/var/lib/haul -v $PWD/downloads:/downloads haul
# Inside a container the daemon must listen on 0.0.0.0, so an API token is required (haul
# refuses to start without one); /healthz stays open for the health check.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependency layer: rebuilt only when the manifests change.
COPY Cargo.toml Cargo.lock build.rs ./
COPY migrations ./migrations
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
# Make sure cargo sees the real sources as newer than the placeholder build.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/haul --create-home haul \
    && mkdir -p /downloads && chown haul:haul /downloads
COPY --from=build /src/target/release/haul /usr/local/bin/haul
COPY config/haul.toml /etc/haul/haul.toml
USER haul
ENV HAUL_LISTEN=0.0.0.0:7070 \
    HAUL_DATA_DIR=/var/lib/haul \
    HAUL_DOWNLOAD_ROOT=/downloads \
    HAUL_LOG_FORMAT=json
VOLUME ["/var/lib/haul", "/downloads"]
EXPOSE 7070
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
    CMD curl -fsS http://127.0.0.1:7070/healthz || exit 1
# tini forwards SIGTERM so haul checkpoints and exits cleanly on `docker stop`.
ENTRYPOINT ["/usr/bin/tini", "--", "haul"]
CMD ["serve", "--config", "/etc/haul/haul.toml"]
