# syntax=docker/dockerfile:1
# sandbox-provisioner: one static (musl) binary in an otherwise empty image, as a non-root user.

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY node-sim ./node-sim
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin sandbox-provisioner \
 && cp target/x86_64-unknown-linux-musl/release/sandbox-provisioner /sandbox-provisioner

FROM scratch
COPY --from=build /sandbox-provisioner /usr/local/bin/sandbox-provisioner
USER 65532:65532
EXPOSE 8002
ENV PROVISIONER_LISTEN=0.0.0.0:8002
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/sandbox-provisioner", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/sandbox-provisioner"]
CMD ["serve"]
