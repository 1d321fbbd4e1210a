# The service's image: built with Rust, run on Debian slim as a non-root
# user. It carries the built-in sample, so `docker run IMAGE` answers with
# no volume and no database.
FROM rust:1-bookworm AS build
WORKDIR /src
# The dependencies first, in a layer of their own, so that a change to the
# sources does not build every crate again.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs && echo 'fn main() {}' > benches/lookup.rs \
    && cargo build --release --locked \
    && rm -rf src benches
COPY . .
# Newer than the placeholders' build, so that cargo builds the crate again.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM debian:bookworm-slim
# Nothing installed: the compose healthcheck asks /readyz with bash alone.
RUN useradd --system --uid 10001 --home-dir /var/lib/xm-ip-service --create-home xm
COPY --from=build /src/target/release/xm-ip-service /usr/local/bin/xm-ip-service
USER xm
WORKDIR /var/lib/xm-ip-service
EXPOSE 9090 8080
ENTRYPOINT ["xm-ip-service"]
CMD ["serve"]
