# Production image of altinn-events: `docker build -t altinn-events .`
#
# Two stages: a Rust builder and a distroless runtime holding only the binary
# (glibc, libgcc and CA certificates come with the base image). The image
# writes nothing at run time, so it runs with a read-only root filesystem, and
# as the distroless `nonroot` user (uid/gid 65532).

# The tag matches the channel pinned in rust-toolchain.toml, so rustup finds
# that toolchain already installed and only adds the components it lists.
FROM rust:1.95.0-slim-bookworm AS builder
WORKDIR /build

# Dependencies first, in their own layer: it is rebuilt only when the manifest,
# the lock file or the toolchain changes, not on every source edit. The dummy
# targets have the shape of the real ones (a library and a binary) so that
# cargo resolves and compiles the same dependency graph.
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --no-default-features --features production \
    && rm -rf src

# The real sources. COPY keeps the files' own modification times, which can be
# older than the dummy build's outputs: touching the crate roots makes cargo
# rebuild the crate itself (the dependencies stay cached).
COPY src ./src
RUN touch -c src/main.rs src/lib.rs \
    && cargo build --release --locked --no-default-features --features production \
    && install -D -m 0555 target/release/altinn-events /out/altinn-events

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/altinn-events /usr/local/bin/altinn-events
USER 65532:65532
ENV EVENTS__LISTEN_ADDR=0.0.0.0:8080
# Panics may print backtraces (RUST_BACKTRACE), but library errors must not
# capture them: the Azure SDK builds an error, and so a stack trace, for
# every optional header a Cosmos response lacks.
ENV RUST_LIB_BACKTRACE=0
EXPOSE 8080
# The binary checks itself: distroless has no shell, curl or wget.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/altinn-events", "healthcheck", "--url", "http://127.0.0.1:8080/health/live"]
ENTRYPOINT ["/usr/local/bin/altinn-events"]
CMD ["serve"]
