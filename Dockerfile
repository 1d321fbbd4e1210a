FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
# curl for the healthcheck on /readyz.
RUN apt-get update && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/xm-ip-service /usr/local/bin/xm-ip-service
EXPOSE 9090 8080
ENTRYPOINT ["xm-ip-service"]
CMD ["serve"]
