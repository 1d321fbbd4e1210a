# Stand-in for rust:1-bookworm: Debian's compilers and this machine's Rust
# toolchain and CA bundle (both copied into the build context by
# scripts/compose-test.sh; the bundle trusts what this machine's registry
# traffic passes through).
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential ca-certificates pkg-config \
    && rm -rf /var/lib/apt/lists/*
COPY toolchain/ /usr/local/
COPY host-ca-certificates.crt /etc/ssl/certs/host-ca-certificates.crt
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/bin:/usr/bin:/bin \
    CARGO_HTTP_CAINFO=/etc/ssl/certs/host-ca-certificates.crt
