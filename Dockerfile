# Empreinte: one binary, agent and collector. Build: `docker build -t empreinte .`
# (not built in CI: no container engine there). Runs as an unprivileged user; the
# Kubernetes agent DaemonSet overrides the user (see deploy/kubernetes/agent.yaml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin empreinte \
    && strip target/release/empreinte

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 empreinte \
    && useradd --system --uid 10001 --gid empreinte --home-dir /var/lib/empreinte \
       --shell /usr/sbin/nologin empreinte \
    && install -d -o empreinte -g empreinte -m 0750 /var/lib/empreinte /etc/empreinte
COPY --from=build /src/target/release/empreinte /usr/local/bin/empreinte
COPY deploy/collector.toml deploy/agent.toml /etc/empreinte/
USER 10001:10001
EXPOSE 9810 9820
VOLUME ["/var/lib/empreinte"]
ENTRYPOINT ["/usr/local/bin/empreinte"]
CMD ["collector", "--config", "/etc/empreinte/collector.toml"]
