FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
COPY --from=build /src/target/release/xm-ip-service /usr/local/bin/xm-ip-service
EXPOSE 9090
ENTRYPOINT ["xm-ip-service"]
CMD ["serve"]
